// setup.html: sets a password with the one-time token in the URL's fragment (#token=…), which never
// reaches a server log.
import { api, setCsrf } from './console/http.js';

const $ = id => document.getElementById(id);
const token = new URLSearchParams(location.hash.slice(1)).get('token');
const form = $('setup-form');
const error = $('setup-error');

if (!token) {
  form.hidden = true;
  error.textContent = 'This link has no set-up token. Ask your instructor for a new link.';
}

form.addEventListener('submit', async event => {
  event.preventDefault();
  const password = $('setup-password').value;
  error.textContent = '';
  if (password.length < 8) return void (error.textContent = 'Use at least 8 characters.');
  if (password !== $('setup-confirm').value) return void (error.textContent = 'The two passwords differ.');
  $('setup-submit').disabled = true;
  try {
    // A browser still signed in (say, the instructor's) must send that session's CSRF token.
    await api.me().then(me => setCsrf(me.csrf_token), () => {});
    await api.redeemSetupLink(token, password);
    form.hidden = true;
    history.replaceState(null, '', location.pathname);
    $('setup-done').hidden = false;
    $('setup-done-link').focus();
  } catch (err) {
    error.textContent = err.message;
  } finally {
    $('setup-submit').disabled = false;
  }
});
