// The conversation's messages and the live answer. An answer streams from an EventSource
// (`delta`, `reasoning`, `item`, `end`); the browser reconnects by itself with Last-Event-ID.

import { h } from './dom.js';
import { render as renderMarkdown } from './markdown.js';

/** "12 tokens in · 40 out · 35.2 tok/s · 0.31 s to first token", skipping what is unknown. */
export function statsLine(stats) {
  if (!stats) return '';
  const parts = [];
  const number = value => value != null && Number.isFinite(+value);
  if (number(stats.input_tokens)) parts.push(`${stats.input_tokens} tokens in`);
  if (number(stats.output_tokens)) parts.push(`${stats.output_tokens} ${parts.length ? 'out' : 'tokens out'}`);
  if (number(stats.tokens_per_second)) parts.push(`${(+stats.tokens_per_second).toFixed(1)} tok/s`);
  if (number(stats.time_to_first_token_seconds)) parts.push(`${(+stats.time_to_first_token_seconds).toFixed(2)} s to first token`);
  return parts.join(' · ');
}

/** The final message an `end` event carries, or null when its data cannot be read as one. */
export function endMessage(data) {
  let message;
  try { message = JSON.parse(data); } catch { return null; }
  return message && typeof message === 'object' && !Array.isArray(message) && typeof message.status === 'string'
    ? message : null;
}

const NOTES = {
  stopped: 'Stopped before the end.',
  interrupted: 'Interrupted: the answer did not finish.',
};

function pretty(value) {
  if (typeof value === 'string') {
    try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
  }
  try { return JSON.stringify(value, null, 2) ?? ''; } catch { return String(value); }
}

/** What an answer waiting for the model says: how many requests go before it. */
export function queueText(ahead) {
  if (!(ahead > 0)) return 'Waiting for the model — you are next';
  return `Waiting for the model — ${ahead} ahead of you`;
}

/** Output items other than the answer text and reasoning (which have their own places): tool calls etc. */
const shownItem = item => item && typeof item === 'object' && item.type !== 'message' && item.type !== 'reasoning';

function itemBox(item) {
  if (item.type === 'tool_call') {
    return h('div', { class: 'tool', 'data-testid': 'tool-call' },
      h('p', { class: 'tool-name' }, 'Tool call: ', h('code', { text: item.tool || item.name || 'unknown' })),
      item.arguments != null ? h('pre', { class: 'tool-json', text: pretty(item.arguments) }) : null,
      item.output != null ? [h('p', { class: 'tool-label', text: 'Output' }), h('pre', { class: 'tool-json', text: pretty(item.output) })] : null);
  }
  return h('div', { class: 'tool' }, h('p', { class: 'tool-name', text: String(item.type || 'item') }),
    h('pre', { class: 'tool-json', text: pretty(item) }));
}

/** `replaceChildren` would turn a null into the text "null". */
const present = (...nodes) => nodes.filter(node => node != null);

/** One message on screen; an assistant message can grow while it streams. */
class MessageView {
  constructor(message, chat) {
    this.chat = chat;
    this.el = h('article', { class: `msg ${message.role === 'user' ? 'user' : 'assistant'}`, 'data-testid': 'message' });
    this.frame = 0;
    this.set(message);
  }

  get streaming() { return this.message.status === 'streaming'; }

  /** (Re)builds the whole view from a message. */
  set(message) {
    const wasOpen = this.reasoningBox?.open;
    this.message = message;
    this.text = message.text || '';
    this.reasoning = message.reasoning || '';
    this.items = (message.output_items || []).filter(shownItem);
    this.el.dataset.role = message.role;
    this.el.dataset.status = message.status || 'complete';
    this.el.setAttribute('aria-busy', String(this.streaming));
    if (message.role === 'user') {
      const images = message.images || [];
      this.el.replaceChildren(...present(
        h('p', { class: 'who', text: 'You' }),
        images.length ? h('div', { class: 'msg-images' }, images.map((image, index) =>
          h('a', { href: image.url, target: '_blank', rel: 'noopener' },
            h('img', { src: image.url, alt: `Attached image ${index + 1}`, loading: 'lazy' })))) : null,
        h('p', { class: 'user-text', 'data-testid': 'message-text', text: this.text })));
      return;
    }
    const model = this.chat.modelName(message.model);
    this.reasoningText = h('div', { class: 'reasoning-text' });
    this.reasoningBox = h('details', { class: 'reasoning', open: !!wasOpen }, h('summary', { text: 'Reasoning' }), this.reasoningText);
    this.itemsBox = h('div', { class: 'items' });
    this.pending = h('p', { class: 'pending', text: 'Thinking…' });
    this.answer = h('div', { class: 'md', 'data-testid': 'answer-text' });
    this.note = h('p', { class: 'note', hidden: true });
    this.actions = h('div', { class: 'msg-actions' });
    const stats = statsLine(message.stats);
    this.el.replaceChildren(...present(
      h('p', { class: 'who', text: model ? `Assistant · ${model}` : 'Assistant' }),
      this.reasoningBox, this.itemsBox, this.pending, this.answer, this.note,
      message.status === 'failed'
        ? h('p', { class: 'msg-error', 'data-testid': 'message-error', text: message.error || 'The answer failed.' }) : null,
      stats ? h('p', { class: 'stats', 'data-testid': 'stats', text: stats }) : null,
      this.actions));
    this.setNote(NOTES[message.status] ? NOTES[message.status] + (message.error ? ` ${message.error}` : '') : '');
    this.paint();
  }

  /** The answer waits for the model: `ahead` requests go first (null: its turn came). */
  setQueued(ahead) {
    if (!this.pending) return;
    this.pending.textContent = ahead == null ? 'Thinking…' : queueText(ahead);
    this.el.dataset.queued = ahead == null ? '' : String(ahead);
  }

  appendText(text) { this.text += text; this.schedule(); }
  appendReasoning(text) { this.reasoning += text; this.schedule(); }
  addItem(item) { if (shownItem(item)) { this.items.push(item); this.schedule(); } }

  /** The server replays a stream from its start: forget what the page showed before. */
  restart() { this.text = ''; this.reasoning = ''; this.items = []; this.schedule(); }

  /** Replaces the streaming view with the final message. */
  finish(message) {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    const stick = this.chat.nearBottom();
    this.set(message);
    if (stick) this.chat.scrollToEnd();
  }

  setNote(text) {
    if (!this.note) return;
    this.note.textContent = text;
    this.note.hidden = !text;
  }

  /** Re-renders at most once per frame while tokens arrive. */
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.paint(); });
  }

  paint() {
    if (this.message.role === 'user') return;
    const stick = this.chat.nearBottom();
    this.answer.replaceChildren(renderMarkdown(this.text));
    this.reasoningText.textContent = this.reasoning;
    this.reasoningBox.hidden = !this.reasoning;
    if (this.itemsBox.childElementCount !== this.items.length) this.itemsBox.replaceChildren(...this.items.map(itemBox));
    this.pending.hidden = !(this.streaming && !this.text);
    if (stick) this.chat.scrollToEnd();
  }

  /** Retry (after a failure or interruption) or Regenerate, only on the last answer. */
  setActions(on, handler) {
    if (!this.actions) return;
    const status = this.message.status;
    if (!on || status === 'streaming') { this.actions.replaceChildren(); return; }
    const retry = status === 'failed' || status === 'interrupted';
    this.actions.replaceChildren(h('button', {
      type: 'button', class: retry ? 'primary' : null, 'data-testid': retry ? 'retry' : 'regenerate', onclick: handler,
    }, retry ? 'Retry' : 'Regenerate'));
  }
}

/** The message list of the open conversation (`scroller` is the scrolling `<section>`). */
export class Chat {
  constructor(scroller, { onRegenerate, modelName }) {
    this.el = scroller;
    this.views = [];
    this.onRegenerate = onRegenerate;
    this.modelName = modelName;
  }

  /** Shows a conversation's messages (or the empty state). */
  show(messages) {
    this.views = messages.map(message => new MessageView(message, this));
    this.el.replaceChildren(...this.views.map(view => view.el));
    if (!messages.length) this.placeholder('Start the conversation: write a message below.');
    this.refreshActions();
    this.scrollToEnd();
  }

  placeholder(text) {
    this.views = [];
    this.el.replaceChildren(h('p', { class: 'empty', text }));
  }

  append(message) {
    if (!this.views.length) this.el.replaceChildren();
    const view = new MessageView(message, this);
    this.views.push(view);
    this.el.append(view.el);
    this.refreshActions();
    this.scrollToEnd();
    return view;
  }

  /** A regenerated answer takes the place of the last one. */
  replaceLastAnswer(message) {
    const last = this.views[this.views.length - 1];
    if (!last || last.message.role !== 'assistant') return this.append(message);
    const view = new MessageView(message, this);
    last.el.replaceWith(view.el);
    this.views[this.views.length - 1] = view;
    this.refreshActions();
    this.scrollToEnd();
    return view;
  }

  viewFor(messageID) { return this.views.find(view => view.message.id === messageID); }

  refreshActions() {
    const last = this.views[this.views.length - 1];
    for (const view of this.views) view.setActions(view === last, () => this.onRegenerate());
  }

  nearBottom() { return this.el.scrollHeight - this.el.scrollTop - this.el.clientHeight < 120; }
  scrollToEnd() { this.el.scrollTop = this.el.scrollHeight; }

  /**
   * Follows an answer's events into `view`. `onEnd(message)` gets the final message; `onLost()` is
   * called when the browser gives up reconnecting (the server refused the stream).
   */
  follow(url, view, { onEnd, onLost }) {
    const source = new EventSource(url);
    let fresh = true, lastID = -1, closed = false;
    const close = () => { closed = true; source.close(); };
    const accept = event => {
      // Event ids count up; skip anything already shown should a reconnect overlap.
      if (/^\d{1,15}$/.test(event.lastEventId)) {
        const id = Number(event.lastEventId);
        if (id <= lastID) return false;
        lastID = id;
      }
      if (fresh) { fresh = false; view.restart(); }
      view.setNote('');
      return true;
    };
    const data = event => { try { return JSON.parse(event.data); } catch { return null; } };
    source.addEventListener('delta', event => { const d = data(event); if (accept(event) && d?.text) view.appendText(d.text); });
    source.addEventListener('reasoning', event => { const d = data(event); if (accept(event) && d?.text) view.appendReasoning(d.text); });
    source.addEventListener('item', event => { const d = data(event); if (accept(event) && d) view.addItem(d); });
    source.addEventListener('queued', event => { const d = data(event); if (accept(event) && Number.isInteger(d?.ahead)) view.setQueued(d.ahead); });
    source.addEventListener('started', event => { if (accept(event)) view.setQueued(null); });
    source.addEventListener('end', event => {
      close();
      const message = endMessage(event.data);
      // Unreadable, it would leave the view on "Thinking…" while saying "Answer complete": ask the server.
      if (!message) { onLost(); return; }
      view.finish(message);
      onEnd(message);
    });
    source.addEventListener('error', () => {
      if (closed) return;
      if (source.readyState === EventSource.CLOSED) { close(); onLost(); }
      else view.setNote('Connection lost; reconnecting…');
    });
    return { close };
  }
}
