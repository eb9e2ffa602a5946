// The gateway's JSON API: every path is written here once. Errors become `ApiError` with the server's
// message; unsafe requests carry the session's CSRF token.

let csrfToken = null;
let unauthorized = () => {};

/** An API failure: `message` is meant for people; `status` is 0 when the server was not reached. */
export class ApiError extends Error {
  constructor(message, status, type, code) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
  }
}

/** Remembers the CSRF token from `/auth/login` or `/auth/me`. */
export function setCsrfToken(token) { csrfToken = token || null; }

/** Called with the error when an API call (not `/auth/…`) answers 401: the session has ended. */
export function onUnauthorized(handler) { unauthorized = handler; }

const FALLBACK = {
  400: 'The server could not accept that request.',
  403: 'You are not allowed to do that.',
  404: 'Not found: it may have been deleted.',
  409: 'That cannot be done right now; try again in a moment.',
  410: 'This link has expired or was already used.',
  413: 'That is too large for the server.',
  429: 'Too many requests; wait a moment and try again.',
};

/** One JSON call: the CSRF header on unsafe requests, the server's error message in an `ApiError`. */
export async function request(method, path, { json, body, type } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (type) {
    headers['Content-Type'] = type;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new ApiError('Could not reach the server. Check your connection and try again.', 0);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    const status = response.status;
    const message = error.message
      || FALLBACK[status]
      || (status >= 500 ? `The server had a problem (${status}). Try again.` : `Request failed (${status}).`);
    const failure = new ApiError(message, status, error.type, error.code);
    if (status === 401 && !path.startsWith('/auth/')) unauthorized(failure);
    throw failure;
  }
  return data;
}

const enc = encodeURIComponent;
const conversationPath = id => `/api/conversations/${enc(id)}`;
const messagePath = (id, messageID) => `${conversationPath(id)}/messages/${enc(messageID)}`;

export const api = {
  me: () => request('GET', '/auth/me'),
  login: (username, password) => request('POST', '/auth/login', { json: { username, password } }),
  logout: () => request('POST', '/auth/logout'),
  signUp: (code, username, password) => request('POST', '/api/join', { json: { code, username, password } }),
  models: () => request('GET', '/api/models'),
  myClasses: () => request('GET', '/api/classes/mine'),
  setActiveClass: classID => request('POST', '/api/classes/active', { json: { class_id: classID } }),
  joinClass: code => request('POST', '/api/classes/join', { json: { code } }),
  invitations: () => request('GET', '/api/classes/invitations'),
  acceptInvitation: classID => request('POST', `/api/classes/invitations/${enc(classID)}/accept`, { json: {} }),
  declineInvitation: classID => request('POST', `/api/classes/invitations/${enc(classID)}/decline`, { json: {} }),
  conversations: ({ q = '', cursor = null, limit = 30 } = {}) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (q) query.set('q', q);
    if (cursor) query.set('cursor', cursor);
    return request('GET', `/api/conversations?${query}`);
  },
  createConversation: (model, systemPrompt) =>
    request('POST', '/api/conversations', { json: systemPrompt ? { model, system_prompt: systemPrompt } : { model } }),
  conversation: id => request('GET', conversationPath(id)),
  updateConversation: (id, fields) => request('PATCH', conversationPath(id), { json: fields }),
  deleteConversation: id => request('DELETE', conversationPath(id)),
  send: (id, text, imageIDs) =>
    request('POST', `${conversationPath(id)}/messages`, { json: { text, image_ids: imageIDs } }),
  stop: (id, messageID) => request('POST', `${messagePath(id, messageID)}/stop`),
  regenerate: id => request('POST', `${conversationPath(id)}/regenerate`),
  uploadImage: blob => request('POST', '/api/images', { body: blob, type: blob.type }),
  eventsURL: (id, messageID) => `${messagePath(id, messageID)}/events`,
  exportURL: (id, format) => `${conversationPath(id)}/export?format=${format}`,
};
