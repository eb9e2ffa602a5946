// Models on the upstream: loaded state, load with a time-to-live, unload, and downloads with a live
// progress bar (polled once a second until the job ends).
import { h, announce } from '../dom.js';
import { api } from './http.js';
import { errorLine, busy, table, focusLost } from './ui.js';

const ENDED = new Set(['completed', 'failed', 'already_downloaded']);
const mb = n => `${(n / 1048576).toFixed(1)} MB`;
let polling = null;

/** `#/models`. */
export async function modelsPage(view) {
  const title = h('h1', { tabindex: -1 }, 'Models');
  const errors = errorLine('models-error');
  const list = h('div', { 'data-testid': 'models-list' });
  const ttl = h('input', { id: 'model-ttl', type: 'number', min: 1, step: 1, value: 3600, inputmode: 'numeric', 'data-testid': 'model-ttl' });

  async function refresh() {
    const { models } = await api.models();
    list.replaceChildren(table('Models', ['Model', 'Type', 'Vision', 'State', ''], models.map(m => {
      const loaded = (m.loaded_instances || []).length > 0;
      const act = h('button', { type: 'button', class: loaded ? '' : 'primary', 'data-testid': loaded ? 'model-unload' : 'model-load',
        'aria-label': `${loaded ? 'Unload' : 'Load'} ${m.display_name || m.key}`, onclick: () => busy(act, errors, async () => {
          const seconds = Number.parseInt(ttl.value, 10);
          if (loaded) await api.unload(m.key); else await api.load(m.key, seconds > 0 ? seconds : undefined);
          announce(`${m.key} ${loaded ? 'unloaded' : 'loaded'}.`);
          await refresh();
          // The table was rebuilt without this button: focus the same model's new one.
          if (act.isConnected || !focusLost()) return;
          const row = [...list.querySelectorAll('tr[data-model]')].find(r => r.dataset.model === m.key);
          (row?.querySelector('button') || title).focus();
        }) }, loaded ? 'Unload' : 'Load');
      return h('tr', { 'data-testid': 'model-row', 'data-model': m.key },
        h('th', { scope: 'row' }, m.display_name || m.key, m.display_name && m.display_name !== m.key ? h('div', { class: 'small muted' }, m.key) : null),
        h('td', null, m.type || ''), h('td', null, m.capabilities?.vision ? 'Yes' : ''),
        h('td', null, h('span', { class: `badge ${loaded ? 'ok' : 'off'}` }, loaded ? 'Loaded' : 'Not loaded')), h('td', null, act));
    })));
  }

  const input = h('input', { id: 'download-input', placeholder: 'e.g. qwen/qwen3-8b', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'download-input' });
  const start = h('button', { type: 'submit', class: 'primary', 'data-testid': 'download-start' }, 'Download');
  const bar = h('progress', { max: 1, value: 0, 'data-testid': 'download-progress', hidden: true, 'aria-labelledby': 'download-text' });
  const text = h('p', { id: 'download-text', role: 'status', 'data-testid': 'download-status' });
  const downloadErrors = errorLine('download-error');
  const form = h('form', { class: 'panel', novalidate: true, onsubmit: e => {
    e.preventDefault();
    const model = input.value.trim();
    if (!model) return downloadErrors.show(new Error('Type the model to download.'));
    // The button stays off while the job is followed (`follow` turns it back on when the job ends).
    busy(start, downloadErrors, () => api.download(model)).then(job => { if (job) follow(model, job); });
  } }, h('h2', null, 'Download a model'), h('label', { for: 'download-input' }, 'Model'),
  h('div', { class: 'inline-form' }, input, start), downloadErrors, bar, text);

  function follow(model, job) {
    clearTimeout(polling);
    const show = s => {
      const total = s.total_size_bytes || 0, done = s.downloaded_bytes || 0;
      bar.hidden = false;
      if (total) { bar.max = total; bar.value = done; } else bar.removeAttribute('value');
      text.textContent = s.status === 'completed' ? `${model}: downloaded.`
        : s.status === 'already_downloaded' ? `${model} is already downloaded.`
        : s.status === 'failed' ? `${model}: the download failed.`
        : `${model}: ${s.status}${total ? ` — ${mb(done)} of ${mb(total)} (${Math.floor((done / total) * 100)}%)` : ''}`;
      if (ENDED.has(s.status)) { if (s.status !== 'failed') { bar.max = 1; bar.value = 1; } start.disabled = false; refresh().catch(() => {}); return; }
      start.disabled = true;
      polling = setTimeout(async () => {
        if (!bar.isConnected) return;
        try { show(await api.downloadStatus(job.job_id)); } catch (err) { downloadErrors.show(err); start.disabled = false; }
      }, 1000);
    };
    show(job);
  }

  view.replaceChildren(title,
    h('section', { class: 'panel' }, h('div', { class: 'inline-form' }, h('label', { for: 'model-ttl' }, 'Unload after idle (seconds)'), ttl),
      errors, list), form);
  await refresh();
}
