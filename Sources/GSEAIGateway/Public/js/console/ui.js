// Small pieces the console's views share: copy buttons, number and date formats, error lines.
import { h, announce } from '../dom.js';

/** `el.replaceChildren(...kids)`, but like `h`: arrays are flattened and null/false left out (the native call
 * would insert the text "null" or "[object HTMLElement],…"). */
export function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter(kid => kid != null && kid !== false));
  return el;
}

/** A button that copies `text()` to the clipboard and says so. */
export function copyButton(text, label = 'Copy', testid = null) {
  const button = h('button', { type: 'button', 'data-testid': testid, onclick: async () => {
    try {
      await navigator.clipboard.writeText(typeof text === 'function' ? text() : text);
      button.textContent = 'Copied';
      announce('Copied to the clipboard.');
    } catch {
      button.textContent = 'Select and copy';
    }
    setTimeout(() => { button.textContent = label; }, 1500);
  } }, label);
  return button;
}

/** A read-only field with the value selected on focus, and a copy button next to it. */
export function copyField(value, label, testid) {
  const input = h('input', { readonly: true, value, 'aria-label': label, class: 'copy-value', 'data-testid': testid,
    onfocus: () => input.select() });
  return h('span', { class: 'copy-field' }, input, copyButton(value, 'Copy', testid && `${testid}-copy`));
}

export const num = n => (n == null ? '–' : Number(n).toLocaleString());
export const when = iso => (iso ? new Date(iso).toLocaleString() : '–');
export const day = iso => (iso ? iso.slice(0, 10) : '');

/** `YYYY-MM-DD`, UTC, `days` ago. */
export function daysAgo(days) {
  const d = new Date(Date.now() - days * 86400000);
  return d.toISOString().slice(0, 10);
}

/** An error line (role=alert) with `show(err)` and `clear()`. */
export function errorLine(testid) {
  const el = h('div', { class: 'error', role: 'alert', 'data-testid': testid });
  el.show = err => { el.textContent = err ? (err.message || String(err)) : ''; };
  el.clear = () => { el.textContent = ''; };
  return el;
}

/** True when keyboard focus fell to the page's body, as when the focused button was rebuilt or removed. */
export const focusLost = () => !document.activeElement || document.activeElement === document.body;

/** Runs `task` with `button` disabled; failures go to `errors` (an errorLine). */
export async function busy(button, errors, task) {
  if (button) button.disabled = true;
  errors?.clear();
  try { return await task(); } catch (err) { if (errors) errors.show(err); else throw err; }
  finally { if (button) button.disabled = false; }
}

/** A table: `headers` are strings; `rows` arrays of cells (nodes or strings). */
export function table(caption, headers, rows, attrs = {}) {
  return h('div', { class: 'table-wrap' }, h('table', attrs,
    caption ? h('caption', { class: 'sr-only' }, caption) : null,
    h('thead', null, h('tr', null, headers.map(t => h('th', { scope: 'col' }, t)))),
    h('tbody', null, rows)));
}
