// Administrators: every user (role, disabled, a password reset link) and the audit log, newest first, page
// by page. Once a student has signed in, only an administrator can give them a reset link.
import { h, announce } from '../dom.js';
import { api } from './http.js';
import { errorLine, busy, table, when, copyField, num } from './ui.js';

/** `#/admin`. */
export async function adminPage(view, me) {
  const errors = errorLine('users-error');
  const users = h('div', { 'data-testid': 'user-list' });
  const resetBox = h('div', { 'data-testid': 'user-reset-link-box', 'aria-live': 'polite' });
  const auditBody = h('tbody');
  const auditErrors = errorLine('audit-error');
  let before = null;
  const more = h('button', { type: 'button', 'data-testid': 'audit-more', hidden: true, onclick: () => busy(more, auditErrors, loadAudit) }, 'Load more');

  async function loadUsers() {
    const { data } = await api.users();
    users.replaceChildren(table('Users', ['User', 'Role', 'Disabled', 'Created', 'Password'], data.map(u => {
      const self = u.id === me.id;
      const role = h('select', { 'aria-label': `Role of ${u.username}`, disabled: self, 'data-testid': 'user-role',
        onchange: () => busy(role, errors, async () => {
          try { await api.updateUser(u.id, { role: role.value }); u.role = role.value; announce(`${u.username} is now ${role.value}.`); }
          catch (err) { role.value = u.role; throw err; }
        }) },
        ['student', 'instructor', 'admin'].map(r => h('option', { value: r, selected: u.role === r }, r)));
      const off = h('input', { type: 'checkbox', checked: u.disabled, disabled: self, 'aria-label': `${u.username} disabled`, 'data-testid': 'user-disabled',
        onchange: () => busy(off, errors, async () => {
          try { await api.updateUser(u.id, { disabled: off.checked }); announce(`${u.username} ${off.checked ? 'disabled' : 'enabled'}.`); }
          catch (err) { off.checked = !off.checked; throw err; }
        }) });
      const reset = h('button', { type: 'button', 'data-testid': 'user-reset-link', onclick: () => busy(reset, errors, async () => {
        const r = await api.userResetLink(u.id);
        resetBox.replaceChildren(h('p', { class: 'small' }, `Password link for ${u.username} (works once, until ${when(r.expires_at)}; their password stays until it is used):`),
          copyField(r.url, `Password link for ${u.username}`, 'user-reset-link-url'));
      }) }, 'Reset link');
      return h('tr', { 'data-testid': 'user-row', 'data-username': u.username },
        h('th', { scope: 'row' }, u.username), h('td', null, role), h('td', null, off), h('td', null, when(u.created_at)), h('td', null, reset));
    })));
  }

  async function loadAudit() {
    const page = await api.audit(before);
    auditBody.append(...page.data.map(a => h('tr', { 'data-testid': 'audit-row' },
      h('td', null, when(a.at)), h('td', null, a.actor_username || a.actor_id), h('td', null, h('code', null, a.action)),
      h('td', { class: 'small' }, [a.target, a.detail].filter(Boolean).join(' — ')))));
    before = page.next_before || null;
    more.hidden = !before;
  }

  // The model servers: up or left aside (and why), slots in use, requests waiting, models.
  const servers = h('div', { 'data-testid': 'upstream-list' });
  const serverErrors = errorLine('upstreams-error');
  const reread = h('button', { type: 'button', 'data-testid': 'upstreams-refresh', onclick: () => busy(reread, serverErrors, () => loadServers(true)) }, 'Read models again');
  async function loadServers(refresh) {
    const { data, waiting, discipline } = await api.upstreams(refresh);
    servers.replaceChildren(
      h('p', { class: 'small muted' }, `${waiting} requests waiting in all; the line is ${discipline === 'fifo' ? 'first come, first served' : 'fair across classes, then students'}.`),
      table('Model servers', ['Server', 'State', 'Slots in use', 'Waiting', 'Models'], data.map(u => h('tr', { 'data-testid': 'upstream-row', 'data-name': u.name },
        h('th', { scope: 'row' }, u.name, h('br'), h('span', { class: 'small muted' }, `${u.kind} · ${u.url}`)),
        h('td', null, u.up ? h('span', { class: 'badge ok' }, 'Up') : h('span', { class: 'badge off', title: u.last_error || '' }, 'Down'),
          !u.up && u.last_error ? h('p', { class: 'small muted' }, u.last_error) : null),
        h('td', { class: 'n' }, `${u.busy} / ${u.slots}`), h('td', { class: 'n' }, num(u.waiting)),
        h('td', { class: 'small' }, u.models ? u.models.map(m => (u.loaded.includes(m) ? `${m} (loaded)` : m)).join(', ') || '–' : 'not read yet')))));
  }

  view.replaceChildren(h('h1', { tabindex: -1 }, 'Administration'),
    h('section', { class: 'panel' }, h('div', { class: 'title-row' }, h('h2', null, 'Model servers'), reread), serverErrors, servers),
    h('section', { class: 'panel' }, h('h2', null, 'Users'), errors, users, resetBox),
    h('section', { class: 'panel' }, h('h2', null, 'Audit log'), auditErrors,
      h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'audit-list' }, h('caption', { class: 'sr-only' }, 'Audit log, newest first'),
        h('thead', null, h('tr', null, ['When', 'Who', 'Action', 'Target'].map(t => h('th', { scope: 'col' }, t)))), auditBody)), more));
  await Promise.all([loadUsers(), loadAudit(), loadServers(false).catch(err => serverErrors.show(err))]);
}
