// The instructor console's entry point: sign-in, role check, and hash routing
// (#/classes, #/classes/<id>, #/classes/<id>/members/<user>, #/models, #/admin).
import { byId } from '../dom.js';
import { api, setCsrf, onUnauthorized } from './http.js';
import { classList, classPage } from './classes.js';
import { memberPage } from './member.js';
import { modelsPage } from './models.js';
import { adminPage } from './admin.js';
import { errorLine } from './ui.js';

let me = null;
let routeSeq = 0; // bumped by every navigation
const show = which => { for (const v of ['boot', 'login-view', 'student-view', 'app']) byId(v).hidden = v !== which; };

async function start() {
  try {
    const info = await api.me();
    setCsrf(info.csrf_token);
    enter(info.user);
  } catch (err) {
    if (err.status === 401) return showLogin();
    byId('boot').textContent = err.message;
  }
}

function showLogin(message = '') {
  me = null;
  // Nothing of the last user's stays in the page: a page still loading is dropped, and the download
  // poll stops with its view.
  routeSeq++;
  byId('view').replaceChildren();
  show('login-view');
  byId('login-error').textContent = message;
  byId('login-username').focus();
}

function enter(user) {
  me = user;
  if (user.role !== 'instructor' && user.role !== 'admin') return show('student-view');
  byId('username').textContent = user.username;
  byId('nav-admin').hidden = user.role !== 'admin';
  show('app');
  route();
}

async function route() {
  if (!me || byId('app').hidden) return;
  const decode = part => { try { return decodeURIComponent(part); } catch { return null; } };
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decode);
  const view = byId('view');
  const page = parts[0] || 'classes';
  for (const a of document.querySelectorAll('.nav a')) {
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // Each page is built off-screen and shown only if no newer navigation happened while it loaded.
  const seq = ++routeSeq;
  const built = document.createElement('div');
  view.replaceChildren();
  view.setAttribute('aria-busy', 'true');
  try {
    // A malformed % sequence names nothing: "not found", as for a class or student that does not exist.
    if (parts.includes(null)) throw new Error('Not found: it may have been deleted.');
    if (page === 'classes' && parts[1] && parts[2] === 'members' && parts[3]) await memberPage(built, parts[1], parts[3]);
    else if (page === 'classes' && parts[1]) await classPage(built, parts[1]);
    else if (page === 'models') await modelsPage(built);
    else if (page === 'admin' && me.role === 'admin') await adminPage(built, me);
    else if (page === 'admin') throw new Error('The admin page is for administrators only; your account is an instructor’s.');
    else await classList(built);
  } catch (err) {
    const failure = errorLine('view-error');
    failure.show(err);
    built.append(failure);
  }
  if (seq !== routeSeq) return;
  view.replaceChildren(...built.childNodes);
  view.removeAttribute('aria-busy');
  view.querySelector('h1')?.focus();
}

byId('login-form').addEventListener('submit', async event => {
  event.preventDefault();
  const button = byId('login-submit');
  const username = byId('login-username').value.trim();
  const password = byId('login-password').value;
  if (!username || !password) return void (byId('login-error').textContent = 'Enter your username and password.');
  button.disabled = true;
  try {
    const result = await api.login(username, password);
    setCsrf(result.csrf_token);
    byId('login-password').value = '';
    const info = await api.me();
    setCsrf(info.csrf_token || result.csrf_token);
    enter(info.user);
  } catch (err) {
    byId('login-error').textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

byId('logout').addEventListener('click', async () => {
  try { await api.logout(); } catch { /* signed out either way */ }
  // A fresh page, as on the chat page: nothing of this user's (data, timers such as the download poll) stays.
  location.replace(location.pathname);
});

// A 401 may also come from the model server through the proxy: only a failed /auth/me ends the session.
onUnauthorized(() => api.me().catch(err => { if (err.status === 401) showLogin('Your session has ended. Sign in again.'); }));
addEventListener('hashchange', route);
start();
