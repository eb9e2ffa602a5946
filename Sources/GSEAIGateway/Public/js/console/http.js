// The console's JSON calls, every console path written here once, through ../api.js's `request`.
import { api as accountAPI, onUnauthorized, request, setCsrfToken } from '../api.js';

// The request helper and its CSRF and session-end handling are the chat page's (../api.js).
export { onUnauthorized, request };
export const setCsrf = setCsrfToken;

const enc = encodeURIComponent;
const cls = id => `/api/classes/${enc(id)}`;
const mem = (id, user) => `${cls(id)}/members/${enc(user)}`;
const get = p => request('GET', p);
const post = (p, json) => request('POST', p, json === undefined ? {} : { json });
const del = p => request('DELETE', p);

export const api = {
  // Signing in and out are the chat page's calls.
  me: accountAPI.me,
  login: accountAPI.login,
  logout: accountAPI.logout,
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
  withdrawInvitation: (id, user) => del(`${cls(id)}/invitations/${enc(user)}`),
  queue: id => get(`${cls(id)}/queue`),
  upstreams: refresh => get(`/api/admin/upstreams${refresh ? '?refresh=true' : ''}`),
  redeemSetupLink: (token, password) => post('/api/setup', { token, password }),
  models: () => get('/api/v1/models'),
  openaiModels: () => get('/v1/models'),
  load: (model, ttl) => post('/api/v1/models/load', ttl ? { model, ttl } : { model }),
  unload: model => post('/api/v1/models/unload', { model }),
  download: model => post('/api/v1/models/download', { model }),
  downloadStatus: job => get(`/api/v1/models/download/status/${enc(job)}`),
  users: () => get('/api/admin/users'),
  updateUser: (id, fields) => request('PATCH', `/api/admin/users/${enc(id)}`, { json: fields }),
  userResetLink: id => post(`/api/admin/users/${enc(id)}/reset-link`),
  audit: before => get(`/api/admin/audit?limit=50${before ? `&before=${enc(before)}` : ''}`),
};
