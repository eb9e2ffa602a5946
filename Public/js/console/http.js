// The console's JSON calls: the same conventions as ../api.js (CSRF header on unsafe requests, the
// server's error message in an ApiError), with every console path written here once.
import { ApiError } from '../api.js';

let csrf = null;
let unauthorized = () => {};
export const setCsrf = token => { csrf = token || null; };
export const onUnauthorized = handler => { unauthorized = handler; };

const FALLBACK = { 400: 'The server could not accept that request.', 403: 'You are not allowed to do that.',
  404: 'Not found: it may have been deleted.', 410: 'This link has expired or was already used.',
  429: 'Too many requests; wait a moment and try again.' };

export async function request(method, path, { json, body, type } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  if (json !== undefined) { headers['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  else if (type) headers['Content-Type'] = type;
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
    const s = response.status;
    const failure = new ApiError(error.message || FALLBACK[s] || `Request failed (${s}).`, s, error.type, error.code);
    if (s === 401 && !path.startsWith('/auth/')) unauthorized(failure);
    throw failure;
  }
  return data;
}

const enc = encodeURIComponent;
const cls = id => `/api/classes/${enc(id)}`;
const mem = (id, user) => `${cls(id)}/members/${enc(user)}`;
const get = p => request('GET', p);
const post = (p, json) => request('POST', p, json === undefined ? {} : { json });
const del = p => request('DELETE', p);

export const api = {
  me: () => get('/auth/me'),
  login: (username, password) => post('/auth/login', { username, password }),
  logout: () => post('/auth/logout'),
  classes: () => get('/api/classes'),
  klass: id => get(cls(id)),
  createClass: (name, policy) => post('/api/classes', policy ? { name, policy } : { name }),
  updateClass: (id, fields) => request('PATCH', cls(id), { json: fields }),
  deleteClass: id => del(cls(id)),
  newCode: id => post(`${cls(id)}/code`),
  setOpen: (id, open) => post(`${cls(id)}/${open ? 'open' : 'close'}`),
  members: (id, since) => get(`${cls(id)}/members${since ? `?since=${enc(since)}` : ''}`),
  usage: (id, user, since) => get(`${mem(id, user)}/usage${since ? `?since=${enc(since)}` : ''}`),
  usageCSV: id => `${cls(id)}/usage.csv`,
  importRoster: (id, csv) => request('POST', `${cls(id)}/roster`, { body: csv, type: 'text/csv' }),
  removeMember: (id, user) => del(mem(id, user)),
  conversations: (id, user) => get(`${mem(id, user)}/conversations`),
  transcript: (id, user, conv) => get(`${mem(id, user)}/conversations/${enc(conv)}`),
  sessions: (id, user) => get(`${mem(id, user)}/sessions`),
  revokeSession: (id, user, s) => del(`${mem(id, user)}/sessions/${enc(s)}`),
  keys: (id, user) => get(`${mem(id, user)}/keys`),
  revokeKey: (id, user, k) => del(`${mem(id, user)}/keys/${enc(k)}`),
  setDisabled: (id, user, off) => post(`${mem(id, user)}/${off ? 'disable' : 'enable'}`),
  resetLink: (id, user) => post(`${mem(id, user)}/reset-link`),
  models: () => get('/api/v1/models'),
  openaiModels: () => get('/v1/models'),
  load: (model, ttl) => post('/api/v1/models/load', ttl ? { model, ttl } : { model }),
  unload: model => post('/api/v1/models/unload', { model }),
  download: model => post('/api/v1/models/download', { model }),
  downloadStatus: job => get(`/api/v1/models/download/status/${enc(job)}`),
  users: () => get('/api/admin/users'),
  updateUser: (id, fields) => request('PATCH', `/api/admin/users/${enc(id)}`, { json: fields }),
  audit: before => get(`/api/admin/audit?limit=50${before ? `&before=${enc(before)}` : ''}`),
};
