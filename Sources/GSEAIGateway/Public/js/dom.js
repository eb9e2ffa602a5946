// The one way this page makes elements: properties and text, never HTML strings.

/**
 * Builds an element. `attrs`: `class`, `text` (textContent), `on<event>` (a listener), anything else is
 * an attribute (`true` → present, `null`/`false`/`undefined` → absent). Children: nodes or strings
 * (as text), arrays of them, or null.
 */
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  el.append(...kids.flat(Infinity).filter(kid => kid != null && kid !== false));
  return el;
}

/** The element with this id. */
export const byId = id => document.getElementById(id);

/** Says `text` through the page's polite live region (cleared first so a repeat is spoken again). */
export function announce(text) {
  const region = byId('announcer');
  region.textContent = '';
  setTimeout(() => { region.textContent = text; }, 60);
}
