// The conversation list: search (debounced), "Load more" pages, the current one marked, and on narrow
// screens a drawer opened from the top bar.

import { api } from './api.js';
import { byId, h } from './dom.js';

/** A link's address for a conversation; `main.js` routes on it. */
export const conversationHash = id => `#/c/${encodeURIComponent(id)}`;

function when(value) {
  if (value == null) return null;
  const date = new Date(typeof value === 'number' && value < 1e12 ? value * 1000 : value);
  if (Number.isNaN(date.getTime())) return null;
  const today = new Date().toDateString() === date.toDateString();
  return {
    iso: date.toISOString(),
    text: today ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : date.toLocaleDateString([], { month: 'short', day: 'numeric', year: date.getFullYear() === new Date().getFullYear() ? undefined : 'numeric' }),
  };
}

/** Wires the sidebar; `onError(error)` shows a failure. */
export function createSidebar({ onError }) {
  const list = byId('conversation-list'), search = byId('search'), more = byId('load-more');
  const status = byId('list-status'), sidebar = byId('sidebar'), toggle = byId('drawer-toggle');
  const backdrop = byId('backdrop'), closeButton = byId('drawer-close'), chat = byId('chat');
  const narrow = matchMedia('(max-width: 799.98px)');
  let query = '', cursor = null, items = [], current = null, sequence = 0, timer = 0;

  async function load(append) {
    const mine = ++sequence;
    more.disabled = true;
    try {
      const page = await api.conversations({ q: query, cursor: append ? cursor : null });
      if (mine !== sequence) return;
      items = append ? items.concat(page.data) : page.data;
      cursor = page.next_cursor || null;
      render();
    } catch (error) {
      if (mine === sequence) onError(error);
    } finally {
      if (mine === sequence) more.disabled = false;
    }
  }

  function render() {
    list.replaceChildren(...items.map(conversation => {
      const time = when(conversation.updated_at);
      return h('li', null, h('a', {
        href: conversationHash(conversation.id), 'data-testid': 'conversation-item',
        'aria-current': conversation.id === current ? 'page' : null,
      }, h('span', { class: 'conv-title', text: conversation.title || 'Untitled' }),
      time ? h('time', { datetime: time.iso, text: time.text }) : null));
    }));
    status.textContent = items.length ? '' : query ? 'No conversations match.' : 'No conversations yet.';
    more.hidden = !cursor;
  }

  function setDrawer(open) {
    const wasOpen = sidebar.classList.contains('open');
    sidebar.classList.toggle('open', open);
    toggle.setAttribute('aria-expanded', String(open));
    backdrop.hidden = !open;
    chat.inert = open && narrow.matches;
    if (open) search.focus();
    else if (wasOpen && narrow.matches) toggle.focus();
  }

  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => { query = search.value.trim(); load(false); }, 250);
  });
  more.addEventListener('click', () => load(true));
  toggle.addEventListener('click', () => setDrawer(!sidebar.classList.contains('open')));
  closeButton.addEventListener('click', () => setDrawer(false));
  backdrop.addEventListener('click', () => setDrawer(false));
  sidebar.addEventListener('keydown', event => { if (event.key === 'Escape' && narrow.matches) setDrawer(false); });
  narrow.addEventListener('change', () => setDrawer(false));

  return {
    /** Reloads the first page (with the current search). */
    reload: () => load(false),

    /** Marks the open conversation (or none). */
    setCurrent(id) {
      current = id;
      const hash = id == null ? null : conversationHash(id);
      for (const link of list.querySelectorAll('a')) {
        if (link.getAttribute('href') === hash) link.setAttribute('aria-current', 'page');
        else link.removeAttribute('aria-current');
      }
    },

    /** Closes the drawer; true when it was open on a narrow screen. */
    closeDrawer() {
      const wasOpen = narrow.matches && sidebar.classList.contains('open');
      sidebar.classList.remove('open');
      toggle.setAttribute('aria-expanded', 'false');
      backdrop.hidden = true;
      chat.inert = false;
      return wasOpen;
    },
  };
}
