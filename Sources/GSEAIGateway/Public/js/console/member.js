// One student of one class: usage chart, transcripts (when the class allows), login sessions and API keys
// (revoke), disable / enable, a password set-up link, removal from the class. What the caller may do to the
// student's account comes with the roster (`account`); a power withheld shows its reason instead.
import { h, announce } from '../dom.js';
import { render } from '../markdown.js';
import { api } from './http.js';
import { copyField, num, when, daysAgo, errorLine, busy, table, fill, focusLost } from './ui.js';
import { usageChart, addUsage } from './chart.js';

/** `#/classes/<id>/members/<user>`. */
export async function memberPage(view, id, user) {
  const [klass, list] = await Promise.all([api.klass(id), api.members(id, daysAgo(29))]);
  const m = list.data.find(x => x.user_id === user);
  if (!m) throw new Error('This student is not in the class.');
  const back = `#/classes/${encodeURIComponent(id)}`;
  const errors = errorLine('member-error');
  const state = h('span', { class: 'badge', 'data-testid': 'member-state' });
  const showState = off => { m.disabled = off; state.textContent = off ? 'Disabled' : 'Active'; state.className = `badge ${off ? 'off' : 'ok'}`; toggle.textContent = off ? 'Enable account' : 'Disable account'; };
  const toggle = h('button', { type: 'button', 'data-testid': 'member-disable', onclick: () => {
    if (!m.disabled && !confirm(`Disable ${m.username}? Their sessions end and their API keys are revoked.`)) return;
    busy(toggle, errors, async () => { const u = await api.setDisabled(id, user, !m.disabled); showState(u.disabled); announce(u.disabled ? 'Account disabled.' : 'Account enabled.'); loadAccess(); });
  } });
  const resetBox = h('div', { 'data-testid': 'reset-link-box', 'aria-live': 'polite' });
  const reset = h('button', { type: 'button', 'data-testid': 'reset-link', onclick: () => busy(reset, errors, async () => {
    const r = await api.resetLink(id, user);
    resetBox.replaceChildren(h('p', { class: 'small' }, `Password set-up link (works once, until ${when(r.expires_at)}):`), copyField(r.url, 'Set-up link', 'reset-link-url'));
  }) }, 'Password reset link');
  const remove = h('button', { type: 'button', class: 'danger', 'data-testid': 'member-remove', onclick: () => {
    if (!confirm(`Remove ${m.username} from ${klass.name}? Their account stays.`)) return;
    busy(remove, errors, async () => { await api.removeMember(id, user); announce('Removed from the class.'); location.hash = back; });
  } }, 'Remove from class');
  showState(m.disabled);
  const access = m.account || {};
  const reasons = access.reasons || {};
  const withheld = (testid, reason) => h('p', { class: 'small muted', 'data-testid': testid }, reason);
  if (!access.disable) toggle.disabled = true;
  if (!access.setup_link) reset.disabled = true;
  const accountNotes = [
    !access.disable && reasons.disable ? withheld('disable-withheld', `Disable: ${reasons.disable}.`) : null,
    !access.setup_link && reasons.setup_link ? withheld('reset-link-withheld', `Password link: ${reasons.setup_link}.`) : null,
  ];

  const chartBox = h('div');
  const sessions = h('div', { 'data-testid': 'sessions' });
  const keys = h('div', { 'data-testid': 'keys' });
  const sessionsTitle = h('h2', { tabindex: -1 }, 'Login sessions');
  const keysTitle = h('h2', { tabindex: -1 }, 'API keys');
  const convs = h('div', { 'data-testid': 'conversations' });
  const transcript = h('div', { class: 'transcript', 'data-testid': 'transcript', tabindex: -1 });
  const accessErrors = errorLine('access-error');
  const transcriptErrors = errorLine('transcript-error');

  async function loadAccess() {
    if (!access.sessions_and_keys) {
      sessions.replaceChildren(withheld('access-withheld', `Not shown: ${reasons.sessions_and_keys || 'not yours to see'}.`));
      return;
    }
    const [s, k] = await Promise.all([api.sessions(id, user), api.keys(id, user)]).catch(err => { accessErrors.show(err); return [null, null]; });
    if (s) sessions.replaceChildren(s.data.length ? table('Login sessions', ['Signed in', 'Last seen', 'Device', ''], s.data.map(x => h('tr', { 'data-testid': 'session-row' },
      h('td', null, when(x.created_at)), h('td', null, when(x.last_seen_at)), h('td', { class: 'small' }, [x.user_agent, x.remote_address].filter(Boolean).join(' · ') || '–'),
      h('td', null, revokeButton(sessions, sessionsTitle, 'revoke-session', 'Sign out', `Sign out this session of ${m.username}?`, () => api.revokeSession(id, user, x.id)))))) : h('p', { class: 'muted small' }, 'No login sessions.'));
    if (k) keys.replaceChildren(k.data.length ? table('API keys', ['Key', 'Label', 'Created', 'Last used', ''], k.data.map(x => h('tr', { 'data-testid': 'key-row', 'data-key-id': x.id },
      h('td', null, h('code', null, `${x.prefix}…`)), h('td', null, x.label), h('td', null, when(x.created_at)), h('td', null, when(x.last_used_at)),
      h('td', null, x.revoked_at ? h('span', { class: 'badge off' }, 'Revoked') : revokeButton(keys, keysTitle, 'revoke-key', 'Revoke', `Revoke the key ${x.prefix}…? Their next call with it is refused.`, () => api.revokeKey(id, user, x.id)))))) : h('p', { class: 'muted small' }, 'No API keys.'));
  }
  /** A revoke button in `box` (sessions or keys); `title` is that list's heading. */
  function revokeButton(box, title, testid, label, question, action) {
    const b = h('button', { type: 'button', class: 'danger', 'data-testid': testid, onclick: () => {
      if (!confirm(question)) return;
      busy(b, accessErrors, async () => {
        await action();
        announce('Revoked.');
        const index = [...box.querySelectorAll('button')].indexOf(b);
        await loadAccess();
        // The rebuilt list has no such button: focus the one now in its place, or else the list's heading.
        if (b.isConnected || !focusLost()) return;
        const buttons = box.querySelectorAll('button');
        (buttons[Math.min(index, buttons.length - 1)] || title).focus();
      });
    } }, label);
    return b;
  }

  // Bumped by every transcript opened: the answer for one opened before arrives late and is dropped.
  let transcriptSeq = 0;
  async function openTranscript(conv) {
    const mine = ++transcriptSeq;
    transcriptErrors.clear();
    let d;
    try { d = await api.transcript(id, user, conv.id); } catch (err) { if (mine === transcriptSeq) throw err; return; }
    if (mine !== transcriptSeq) return;
    fill(transcript, h('h3', null, d.conversation.title || 'Untitled conversation'),
      h('p', { class: 'small muted' }, `${d.conversation.model} · ${when(d.conversation.created_at)}`),
      d.conversation.system_prompt ? h('details', null, h('summary', null, 'System prompt'), h('p', { class: 'pre' }, d.conversation.system_prompt)) : null,
      d.messages.map(msg => h('article', { class: `msg ${msg.role}`, 'data-role': msg.role },
        h('p', { class: 'small muted' }, `${msg.role === 'user' ? m.username : (msg.model || 'Model')} · ${when(msg.created_at)}${msg.status && msg.status !== 'complete' ? ` · ${msg.status}` : ''}`),
        msg.role === 'user' ? h('p', { class: 'pre' }, msg.text) : h('div', { class: 'md' }, render(msg.text || '')),
        msg.images?.length ? h('p', { class: 'small muted' }, `${msg.images.length} image(s) attached`) : null)));
    transcript.focus();
  }

  view.replaceChildren(
    h('p', { class: 'crumbs' }, h('a', { href: back }, `← ${klass.name}`)),
    h('div', { class: 'title-row' }, h('h1', { tabindex: -1 }, m.username), state),
    h('section', { class: 'panel actions' }, toggle, reset, remove, errors, ...accountNotes, resetBox),
    h('section', { class: 'panel' }, h('h2', null, 'Usage'),
      h('p', { class: 'small muted' }, `Since ${list.since}: ${num(m.requests)} requests, ${num(m.tokens)} tokens.`), chartBox),
    h('section', { class: 'panel' }, sessionsTitle, accessErrors, sessions, keysTitle, keys),
    h('section', { class: 'panel' }, h('h2', null, 'Transcripts'), transcriptErrors, convs, transcript));

  const visibility = klass.policy?.transcript_visibility;
  api.usage(id, user, list.since).then(u => chartBox.replaceChildren(usageChart(m.username, u.since, addUsage(new Map(), u.data), 'member-usage-chart')),
    err => chartBox.replaceChildren(h('p', { class: 'muted small' }, err.status === 403 ? 'Usage is hidden: this class’s transcript visibility is off.' : err.message)));
  if (visibility !== 'full') {
    convs.replaceChildren(h('p', { class: 'muted small' }, 'Transcripts are not visible in this class (its policy’s transcript visibility is not “full”).'));
  } else {
    api.conversations(id, user).then(r => convs.replaceChildren(r.data.length
      ? h('ul', { class: 'conv-links', 'data-testid': 'transcript-list' }, r.data.map(cv => h('li', null,
        h('button', { type: 'button', class: 'linkish', 'data-testid': 'transcript-open', onclick: () => openTranscript(cv).catch(err => transcriptErrors.show(err)) },
          cv.title || 'Untitled conversation'), h('span', { class: 'small muted' }, ` ${cv.model} · ${when(cv.updated_at)}`))))
      : h('p', { class: 'muted small' }, 'No conversations in this class.')),
    err => convs.replaceChildren(h('p', { class: 'error' }, err.message)));
  }
  await loadAccess();
}
