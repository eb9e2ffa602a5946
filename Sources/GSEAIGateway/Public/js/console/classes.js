// Classes: the list and creation form, and one class's page (join code, settings and policy, roster
// with usage chart, roster import).
import { h, announce } from '../dom.js';
import { api } from './http.js';
import { copyButton, copyField, num, when, daysAgo, errorLine, busy, table, fill } from './ui.js';
import { usageChart, addUsage } from './chart.js';

const link = (href, text, attrs = {}) => h('a', { href, ...attrs }, text);

/** `#/classes`: every class the user may manage, and a form to create one. */
export async function classList(view) {
  const errors = errorLine('class-error');
  const name = h('input', { id: 'class-create-name', maxlength: 200, required: true, autocomplete: 'off', 'data-testid': 'class-create-name' });
  const list = h('ul', { class: 'card-list', 'data-testid': 'class-list' });
  const create = h('button', { type: 'submit', class: 'primary', 'data-testid': 'class-create' }, 'Create class');
  const form = h('form', { class: 'inline-form', novalidate: true, onsubmit: e => {
    e.preventDefault();
    if (!name.value.trim()) { errors.show(new Error('Give the class a name.')); name.focus(); return; }
    busy(create, errors, async () => {
      const made = await api.createClass(name.value.trim());
      announce(`Class ${made.name} created.`);
      location.hash = `#/classes/${encodeURIComponent(made.id)}`;
    });
  } }, h('label', { for: 'class-create-name' }, 'New class'), name, create);
  view.replaceChildren(h('h1', { tabindex: -1 }, 'Classes'), form, errors, list);
  const { data } = await api.classes();
  list.append(...data.map(c => h('li', { class: 'card', 'data-testid': 'class-item', 'data-id': c.id },
    link(`#/classes/${encodeURIComponent(c.id)}`, c.name, { class: 'card-title' }),
    h('span', { class: `badge ${c.is_active ? 'ok' : 'off'}` }, c.is_active ? 'Active' : c.is_open ? 'Not in its dates' : 'Closed'),
    h('span', { class: 'small muted' }, 'Join code ', h('code', null, c.join_code)))));
  if (!data.length) list.append(h('li', { class: 'muted' }, 'No classes yet.'));
}

const local = iso => {
  if (!iso) return '';
  const d = new Date(iso);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
};
const iso = value => (value ? new Date(value).toISOString() : null);
const intOrNull = value => (value.trim() === '' ? null : Number.parseInt(value, 10));

async function modelKeys() {
  try { return (await api.models()).models.map(m => m.key); } catch {
    try { return (await api.openaiModels()).data.map(m => m.id); } catch { return []; }
  }
}

function field(id, label, input, hint) {
  input.id = id;
  if (hint) input.setAttribute('aria-describedby', `${id}-hint`);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
}
function check(id, label, checked, testid) {
  return h('div', { class: 'field check' }, h('input', { type: 'checkbox', id, checked, 'data-testid': testid }), h('label', { for: id }, label));
}

/** `#/classes/<id>`. */
export async function classPage(view, id) {
  const [c, models] = await Promise.all([api.klass(id), modelKeys()]);
  const p = c.policy || {};
  const title = h('h1', { tabindex: -1 }, c.name);
  const status = h('span', { class: 'badge', 'data-testid': 'class-status' });
  const showStatus = k => {
    status.textContent = k.is_active ? 'Active' : k.is_open ? 'Open, outside its dates' : 'Closed';
    status.className = `badge ${k.is_active ? 'ok' : 'off'}`;
    toggle.textContent = k.is_open ? 'Close class' : 'Open class';
  };

  // Join code; a join link opens the chat page with the code filled in (sign-up, or joining when signed in).
  const joinLink = value => `${location.origin}/?code=${encodeURIComponent(value)}`;
  const code = h('output', { class: 'join-code', 'data-testid': 'join-code' }, c.join_code);
  const codeErrors = errorLine('code-error');
  const regen = h('button', { type: 'button', 'data-testid': 'join-code-regenerate', onclick: () => {
    if (!confirm('Make a new join code? The old one stops working.')) return;
    busy(regen, codeErrors, async () => { const k = await api.newCode(id); code.textContent = k.join_code; announce(`New join code ${k.join_code}.`); });
  } }, 'New code');
  const toggle = h('button', { type: 'button', 'data-testid': 'class-toggle-open', onclick: () => busy(toggle, codeErrors, async () => {
    const k = await api.setOpen(id, !c.is_open);
    Object.assign(c, k); openBox.checked = k.is_open; showStatus(k); announce(k.is_open ? 'Class opened.' : 'Class closed.');
  }) });
  const remove = h('button', { type: 'button', class: 'danger', 'data-testid': 'class-delete', onclick: () => {
    if (!confirm(`Delete the class “${c.name}”? Its students keep their accounts.`)) return;
    busy(remove, codeErrors, async () => { await api.deleteClass(id); announce('Class deleted.'); location.hash = '#/classes'; });
  } }, 'Delete class');
  showStatus(c);

  // Settings and policy
  const nameInput = h('input', { maxlength: 200, value: c.name, required: true, 'data-testid': 'class-name' });
  const openRow = check('class-open', 'Open (students can work through it)', c.is_open, 'class-open');
  const openBox = openRow.querySelector('input');
  const starts = h('input', { type: 'datetime-local', value: local(c.starts_at), 'data-testid': 'class-starts' });
  const ends = h('input', { type: 'datetime-local', value: local(c.ends_at), 'data-testid': 'class-ends' });
  const allowed = new Set(p.allowed_models || []);
  const modelBoxes = [...new Set([...models, ...allowed])].map((key, i) => h('div', { class: 'check' },
    h('input', { type: 'checkbox', id: `pm-${i}`, value: key, checked: allowed.has(key), 'data-testid': 'policy-model' }),
    h('label', { for: `pm-${i}` }, key)));
  const prompt = h('textarea', { rows: 3, 'data-testid': 'policy-system-prompt' }, p.system_prompt || '');
  const lockedRow = check('policy-locked', 'Lock the system prompt (students cannot replace it)', !!p.system_prompt_locked, 'policy-system-prompt-locked');
  const numInput = (value, testid) => h('input', { type: 'number', min: 1, step: 1, inputmode: 'numeric', value: value ?? '', 'data-testid': testid });
  const maxOut = numInput(p.max_output_tokens, 'policy-max-output-tokens');
  const budget = numInput(p.daily_token_budget, 'policy-daily-token-budget');
  const rpm = numInput(p.requests_per_minute, 'policy-requests-per-minute');
  const concurrent = numInput(p.max_concurrent_requests, 'policy-max-concurrent-requests');
  const imagesRow = check('policy-images', 'Images allowed', p.images_allowed !== false, 'policy-images-allowed');
  const visibility = h('select', { 'data-testid': 'policy-transcript-visibility' },
    [['off', 'Off: nothing'], ['usage', 'Usage only'], ['full', 'Usage and transcripts']].map(([v, t]) =>
      h('option', { value: v, selected: (p.transcript_visibility || 'usage') === v }, t)));
  const saveErrors = errorLine('policy-error');
  const save = h('button', { type: 'submit', class: 'primary', 'data-testid': 'policy-save' }, 'Save settings');
  const settings = h('form', { class: 'panel settings', novalidate: true, onsubmit: e => {
    e.preventDefault();
    const numbers = [maxOut, budget, rpm, concurrent].map(i => intOrNull(i.value));
    if (!nameInput.value.trim()) return saveErrors.show(new Error('The class needs a name.'));
    if (numbers.some(n => n !== null && !(n >= 1))) return saveErrors.show(new Error('Limits are whole numbers of 1 or more, or empty for none.'));
    busy(save, saveErrors, async () => {
      const k = await api.updateClass(id, {
        name: nameInput.value.trim(), is_open: openBox.checked, starts_at: iso(starts.value), ends_at: iso(ends.value),
        policy: {
          allowed_models: modelBoxes.map(b => b.firstChild).filter(b => b.checked).map(b => b.value),
          system_prompt: prompt.value.trim() ? prompt.value : null,
          system_prompt_locked: lockedRow.querySelector('input').checked,
          max_output_tokens: numbers[0], daily_token_budget: numbers[1], requests_per_minute: numbers[2],
          max_concurrent_requests: numbers[3],
          images_allowed: imagesRow.querySelector('input').checked, transcript_visibility: visibility.value,
        } });
      Object.assign(c, k); title.textContent = k.name; showStatus(k);
      announce('Settings saved.');
    });
  } },
  h('h2', null, 'Settings and policy'),
  field('class-name', 'Name', nameInput), openRow,
  h('div', { class: 'row' }, field('class-starts', 'Starts', starts, 'Empty: no start.'), field('class-ends', 'Ends', ends, 'Empty: no end.')),
  h('fieldset', { class: 'models' }, h('legend', null, 'Allowed models (none ticked: every model)'),
    modelBoxes.length ? modelBoxes : h('p', { class: 'muted small' }, 'No models listed by the server.')),
  field('policy-prompt', 'Default system prompt', prompt), lockedRow,
  h('div', { class: 'row' },
    field('policy-max-out', 'Max output tokens', maxOut), field('policy-budget', 'Daily tokens per student', budget),
    field('policy-rpm', 'Requests per minute', rpm),
    field('policy-concurrent', 'Requests at once per student', concurrent, 'Empty: 2. More wait their turn.')),
  imagesRow, field('policy-visibility', 'Transcript visibility', visibility, 'Shown to students on the chat page.'),
  saveErrors, save);

  // Roster
  const since = h('input', { type: 'date', value: daysAgo(29), 'data-testid': 'roster-since' });
  const roster = h('div', { 'data-testid': 'roster' });
  const invited = h('div', { 'data-testid': 'invited' });
  const chartBox = h('div');
  const rosterErrors = errorLine('roster-error');
  // Bumped by every reload ("Since" changed twice, an import during a reload): a late answer is dropped.
  let rosterSeq = 0;
  const loadRoster = () => { const mine = ++rosterSeq; return busy(null, rosterErrors, async () => {
    let list;
    try { list = await api.members(id, since.value); } catch (err) { if (mine === rosterSeq) throw err; return; }
    if (mine !== rosterSeq) return;
    const hidden = list.daily === undefined;
    roster.replaceChildren(list.data.length ? table('Students', ['Student', 'Requests', 'Tokens', 'Last active', 'Last seen', ''],
      list.data.map(m => h('tr', { 'data-testid': 'member-row', 'data-username': m.username },
        h('th', { scope: 'row' }, link(`#/classes/${encodeURIComponent(id)}/members/${encodeURIComponent(m.user_id)}`, m.username)),
        h('td', { class: 'n' }, num(m.requests)), h('td', { class: 'n' }, num(m.tokens)),
        h('td', null, m.last_active_day || '–'), h('td', null, when(m.last_seen_at)),
        h('td', null, m.disabled ? h('span', { class: 'badge off' }, 'Disabled') : '',
          m.has_signed_in ? '' : h('span', { class: 'badge', 'data-testid': 'not-signed-in' }, 'Not signed in yet'))))) : h('p', { class: 'muted' }, 'No students yet.'));
    invited.replaceChildren(...(list.invited?.length ? [table('Invited, not answered yet', ['Student', 'Invited', ''],
      list.invited.map(x => {
        const withdraw = h('button', { type: 'button', 'data-testid': 'invitation-withdraw', onclick: () => busy(withdraw, rosterErrors, async () => {
          await api.withdrawInvitation(id, x.user_id); announce(`Invitation of ${x.username} withdrawn.`); await loadRoster();
        }) }, 'Withdraw');
        return h('tr', { 'data-testid': 'invited-row', 'data-username': x.username }, h('th', { scope: 'row' }, x.username), h('td', null, when(x.invited_at)), h('td', null, withdraw));
      }))] : []));
    if (hidden) return chartBox.replaceChildren(h('p', { class: 'muted small' }, 'Usage is hidden: this class’s transcript visibility is off.'));
    chartBox.replaceChildren(usageChart(`Class ${c.name}`, list.since, addUsage(new Map(), list.daily), 'class-usage-chart'));
  }); };
  since.addEventListener('change', loadRoster);

  // Import
  const csv = h('textarea', { rows: 4, placeholder: 'one username per line', 'data-testid': 'roster-csv' });
  const importErrors = errorLine('roster-import-error');
  const file = h('input', { type: 'file', accept: '.csv,text/csv,text/plain', 'data-testid': 'roster-file',
    onchange: async () => {
      const chosen = file.files[0];
      if (!chosen) return;
      importErrors.clear();
      try { csv.value = await chosen.text(); } catch (err) { importErrors.show(new Error(`${chosen.name} could not be read: ${err.message}`)); }
    } });
  const result = h('div', { 'data-testid': 'roster-result', 'aria-live': 'polite' });
  const importButton = h('button', { type: 'submit', class: 'primary', 'data-testid': 'roster-import' }, 'Import');
  const importForm = h('form', { class: 'panel', novalidate: true, onsubmit: e => {
    e.preventDefault();
    if (!csv.value.trim()) return importErrors.show(new Error('Paste usernames or choose a CSV file first.'));
    busy(importButton, importErrors, async () => {
      const r = await api.importRoster(id, csv.value);
      fill(result,
        h('p', null, `${r.created.length} accounts created, ${r.invited.length} existing students invited, ${r.errors.length} lines refused.`),
        r.created.length ? table('Set-up links', ['Student', 'Set-up link (send it to them; it works once)'],
          r.created.map(s => h('tr', { 'data-testid': 'setup-link-row', 'data-username': s.username },
            h('th', { scope: 'row' }, s.username), h('td', null, copyField(s.setup_url, `Set-up link for ${s.username}`, 'setup-link'))))) : null,
        r.invited.length ? h('p', { class: 'small', 'data-testid': 'roster-invited' },
          `Invited (they join when they accept on their page): ${r.invited.join(', ')}`) : null,
        r.already_members.length ? h('p', { class: 'small' }, `Already in the class: ${r.already_members.join(', ')}`) : null,
        r.errors.length ? h('ul', { class: 'error-list', 'data-testid': 'roster-errors' },
          r.errors.map(x => h('li', null, `Line ${x.line}: ${x.message}`))) : null);
      announce('Roster imported.');
      loadRoster();
    });
  } }, h('h2', null, 'Import a roster'),
  field('roster-csv', 'Usernames (CSV, one per line)', csv), field('roster-file', 'Or a CSV file', file),
  importErrors, importButton, result);

  view.replaceChildren(
    h('p', { class: 'crumbs' }, link('#/classes', '← Classes')),
    h('div', { class: 'title-row' }, title, status),
    h('section', { class: 'panel code-panel', 'aria-label': 'Join code' },
      h('span', { class: 'small muted' }, 'Join code'), code, copyButton(() => code.textContent, 'Copy code', 'join-code-copy'),
      copyButton(() => joinLink(code.textContent), 'Copy join link', 'join-link-copy'), regen, toggle, remove, codeErrors),
    settings,
    h('section', { class: 'panel' }, h('div', { class: 'title-row' }, h('h2', null, 'Students'),
      h('label', { for: 'roster-since', class: 'small' }, 'Since'), Object.assign(since, { id: 'roster-since' }),
      h('a', { class: 'button', href: api.usageCSV(id), download: true, 'data-testid': 'usage-csv' }, 'Export CSV')),
    rosterErrors, chartBox, roster, invited),
    queuePanel(id),
    importForm);
  await loadRoster();
}

/** The class's line for the model servers: who waits, who is answered now, and how long waits were lately. */
function queuePanel(id) {
  const box = h('div', { 'data-testid': 'class-queue', 'aria-live': 'polite' });
  const errors = errorLine('queue-error');
  const refresh = h('button', { type: 'button', 'data-testid': 'queue-refresh', onclick: () => busy(refresh, errors, load) }, 'Refresh');
  const seconds = s => (s == null ? '–' : `${s < 10 ? s.toFixed(1) : Math.round(s)} s`);
  async function load() {
    const q = await api.queue(id);
    box.replaceChildren(
      h('p', { class: 'small', 'data-testid': 'queue-summary' },
        `${q.waiting} waiting, ${q.running} being answered. Last ${q.recent_waits} waits: median ${seconds(q.wait_p50_seconds)}, 95% within ${seconds(q.wait_p95_seconds)}.`),
      q.students.length ? table('Students in line', ['Student', 'Waiting', 'Being answered'], q.students.map(s =>
        h('tr', { 'data-testid': 'queue-row', 'data-username': s.username },
          h('th', { scope: 'row' }, s.username), h('td', { class: 'n' }, num(s.waiting)), h('td', { class: 'n' }, num(s.running)))))
        : h('p', { class: 'muted small' }, 'Nobody from this class waits now.'));
  }
  busy(null, errors, load);
  return h('section', { class: 'panel' }, h('div', { class: 'title-row' }, h('h2', null, 'Queue for the model'), refresh), errors, box);
}
