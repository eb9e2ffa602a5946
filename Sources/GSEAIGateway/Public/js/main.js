// Entry point: sign-in, routing (#/c/<id> is the open conversation, so a reload reopens it and resumes
// a streaming answer), and the flows that tie the sidebar, the messages and the composer together.

import { api, onUnauthorized, setCsrfToken } from './api.js';
import { Chat } from './chat.js';
import { createClassPicker, describeClass } from './classes.js';
import { createComposer } from './composer.js';
import { announce, byId } from './dom.js';
import { conversationHash, createSidebar } from './sidebar.js';

const state = {
  user: null,
  started: false,
  conversation: null, // the open conversation; null for a new chat (created on first send)
  stream: null,       // { conversationID, messageID, follower } while an answer streams
  busy: false,        // a send or regenerate request is in flight
  load: 0,            // bumped on every navigation, so late answers for a page left behind are dropped
  saving: null,       // the open conversation's model or system prompt change in flight: a promise of '' or the error
};

const NOT_FOUND = 'That conversation does not exist; it may have been deleted.';

const sidebar = createSidebar({ onError: error => composer.showError(error.message) });
const chat = new Chat(byId('messages'), {
  onRegenerate: regenerate,
  modelName: id => (composer.modelInfo(id)?.display_name || id || ''),
});
const composer = createComposer({
  onSend: send,
  onStop: stop,
  onModelChange: changeModel,
  onSystemPromptChange: changeSystemPrompt,
});
const classes = createClassPicker({ onChange: classChanged });

/** A join link (`/?code=…`) carries the class's join code. */
let joinCode = new URLSearchParams(location.search).get('code') || '';
if (joinCode) history.replaceState(null, '', location.pathname + location.hash);

// Signing in and out

function showLogin(message = '') {
  byId('app').hidden = true;
  byId('login-view').hidden = false;
  showSignUp(false);
  byId('login-error').textContent = message;
  byId('login-username').focus();
}

/** Switches the sign-in card to the sign-up-with-a-join-code card (or back). */
function showSignUp(on) {
  byId('login-form').hidden = on;
  byId('signup-form').hidden = !on;
  if (on) (byId('signup-code').value ? byId('signup-username') : byId('signup-code')).focus();
  else byId('login-username').focus();
}

async function signedIn(session) {
  if (state.user && state.user.id !== session.user.id) { location.replace(location.pathname); return; }
  setCsrfToken(session.csrf_token);
  state.user = session.user;
  byId('username').textContent = session.user.username;
  byId('login-view').hidden = true;
  byId('app').hidden = false;
  byId('login-password').value = '';
  if (state.started) {
    // Signed in again after the session ended: the address decides what is shown (a streaming answer is
    // followed again), not the conversation open when the session ended, which may be one left since.
    // A new chat is left as it is, with the system prompt typed for it.
    composer.clearError();
    if (location.hash || state.conversation) await route();
    composer.focus();
    return;
  }
  state.started = true;
  composer.setUser(session.user.id);
  sidebar.reload();
  try {
    await classes.start(session.user, joinCode);
  } catch (error) {
    composer.showError(`Could not load your classes: ${error.message}`);
  }
  await loadModels();
  await route();
}

/** The models offered to this user (a class may allow only some). */
async function loadModels() {
  try {
    const models = await api.models();
    composer.setModels(models.data || []);
  } catch (error) {
    composer.showError(`Could not load the models: ${error.message}`);
  }
}

/** The student chose or joined a class: its models and rules apply from a new chat on. */
async function classChanged() {
  await loadModels();
  if (location.hash) history.pushState(null, '', location.pathname);
  newChat();
}

/** Says which class applies to the conversation (or new chat) and what its policy means. */
function showClass(conversation) {
  const cls = classes.classFor(conversation);
  const notice = byId('class-notice');
  notice.hidden = !cls;
  notice.textContent = cls ? describeClass(cls) : '';
  notice.classList.toggle('closed', !!cls && !cls.is_active);
  composer.setClassPolicy(cls ? cls.policy : null);
}

byId('login-form').addEventListener('submit', async event => {
  event.preventDefault();
  const button = byId('login-submit'), username = byId('login-username'), password = byId('login-password');
  if (!username.value.trim() || !password.value) {
    byId('login-error').textContent = 'Enter your username and password.';
    (username.value.trim() ? password : username).focus();
    return;
  }
  button.disabled = true;
  byId('login-error').textContent = '';
  try {
    await signedIn(await api.login(username.value.trim(), password.value));
  } catch (error) {
    byId('login-error').textContent = error.message;
    password.value = '';
    password.focus();
  } finally {
    button.disabled = false;
  }
});

byId('show-signup').addEventListener('click', () => showSignUp(true));
byId('show-login').addEventListener('click', () => showSignUp(false));

byId('signup-form').addEventListener('submit', async event => {
  event.preventDefault();
  const button = byId('signup-submit'), errorLine = byId('signup-error');
  const code = byId('signup-code'), username = byId('signup-username'), password = byId('signup-password');
  const empty = [code, username, password].find(field => !field.value.trim());
  if (empty) {
    errorLine.textContent = 'Enter the join code, a username and a password.';
    empty.focus();
    return;
  }
  button.disabled = true;
  errorLine.textContent = '';
  try {
    const joined = await api.signUp(code.value.trim(), username.value.trim(), password.value);
    password.value = '';
    joinCode = '';  // used: the new account is in the class already
    await signedIn(joined);
    announce(`Welcome! You are in ${joined.class.name}.`);
  } catch (error) {
    errorLine.textContent = error.message;
    (error.status === 409 ? username : error.status === 400 ? password : code).focus();
  } finally {
    button.disabled = false;
  }
});

byId('logout').addEventListener('click', async () => {
  stopFollowing();
  try { await api.logout(); } catch { /* leaving anyway */ }
  location.replace(location.pathname);
});

onUnauthorized(() => {
  stopFollowing();
  showLogin('Your session has ended. Sign in again; what you typed is kept.');
});

// Routing

async function route() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  if (!match) { newChat(); return; }
  let id;
  try {
    id = decodeURIComponent(match[1]);
  } catch {
    // A malformed % sequence names no conversation: the same as one that does not exist.
    history.replaceState(null, '', location.pathname);
    newChat();
    composer.showError(NOT_FOUND);
    return;
  }
  await openConversation(id);
}

addEventListener('hashchange', () => {
  const focusTitle = sidebar.closeDrawer();
  route().then(() => { if (focusTitle) byId('chat-title').focus(); });
});

function showHeader(conversation) {
  // A change still being saved belongs to the conversation left: a send here need not wait for it.
  if (conversation?.id !== state.conversation?.id) state.saving = null;
  state.conversation = conversation;
  byId('chat-title').textContent = conversation ? conversation.title || 'Untitled' : 'New chat';
  document.title = conversation?.title ? `${conversation.title} · GSE AI` : 'GSE AI';
  byId('chat-actions').hidden = !conversation;
  showClass(conversation);
  hideRename();
  if (conversation) {
    byId('export-markdown').href = api.exportURL(conversation.id, 'markdown');
    byId('export-json').href = api.exportURL(conversation.id, 'json');
  }
  sidebar.setCurrent(conversation ? conversation.id : null);
}

function newChat() {
  state.load++;
  stopFollowing();
  showHeader(null);
  composer.setConversation(null);
  chat.show([]);
}

async function openConversation(id) {
  const load = ++state.load;
  stopFollowing();
  composer.clearError();
  chat.placeholder('Loading…');
  try {
    const { conversation, messages } = await api.conversation(id);
    if (load !== state.load) return;
    showHeader(conversation);
    composer.setConversation(conversation);
    chat.show(messages);
    const last = messages[messages.length - 1];
    if (last && last.role === 'assistant' && last.status === 'streaming') follow(conversation.id, last, chat.viewFor(last.id));
  } catch (error) {
    if (load !== state.load || error.status === 401) return;
    if (error.status === 0 || error.status >= 500) chat.placeholder('This conversation could not be loaded.');
    else { history.replaceState(null, '', location.pathname); newChat(); }
    composer.showError(error.status === 404 ? NOT_FOUND : error.message);
  }
}

// Streaming answers

function follow(conversationID, message, view, attempt = 0) {
  if (!view) return;
  stopFollowing();
  composer.setStreaming(true);
  const stream = { conversationID, messageID: message.id };
  stream.follower = chat.follow(api.eventsURL(conversationID, message.id), view, {
    onEnd: final => { if (state.stream === stream) finished(final); },
    onLost: () => recover(stream, message, view, attempt),
  });
  state.stream = stream;
}

function stopFollowing() {
  state.stream?.follower.close();
  state.stream = null;
  composer.setStreaming(false);
}

const ENDINGS = {
  complete: 'Answer complete.',
  stopped: 'Answer stopped.',
  interrupted: 'The answer was interrupted.',
};

function finished(message) {
  state.stream = null;
  composer.setStreaming(false);
  chat.refreshActions();
  announce(message.status === 'failed'
    ? `The answer failed. ${message.error || ''}`.trim()
    : ENDINGS[message.status] || 'Answer complete.');
  sidebar.reload();
}

/** The server refused the event stream: ask for the message itself, and follow again if it still streams. */
async function recover(stream, message, view, attempt) {
  await new Promise(resolve => setTimeout(resolve, 1000 * (attempt + 1)));
  if (state.stream !== stream) return;
  try {
    const { messages } = await api.conversation(stream.conversationID);
    if (state.stream !== stream) return;
    const latest = messages.find(candidate => candidate.id === message.id);
    if (latest && latest.status !== 'streaming') { view.finish(latest); finished(latest); return; }
    if (latest && attempt < 5) { follow(stream.conversationID, latest, view, attempt + 1); return; }
  } catch (error) {
    if (state.stream !== stream || error.status === 401) return;
    if (attempt < 5) { recover(stream, message, view, attempt + 1); return; }
  }
  stopFollowing();
  view.setNote('Lost the connection to this answer. Reload the page to see how it ended.');
}

// Actions

/**
 * Waits for a model or system prompt change still being saved, so that the answer uses what is on screen
 * (the prompt is saved on `change`, which fires on the mousedown of Send). False, with the error shown,
 * if it failed.
 */
async function changesSaved() {
  const failure = await state.saving;
  if (failure) composer.showError(failure);
  return !failure;
}

async function send() {
  if (state.busy || state.stream) return;
  // What goes out is what the composer holds now: the box stays editable while the message is on its way.
  const text = composer.text();
  const items = composer.attachments.items.slice();
  if (!text.trim() && !items.length) { composer.focus(); return; }
  const model = composer.model(), systemPrompt = composer.systemPrompt();
  if (!model) { composer.showError('Choose a model first.'); return; }
  if (items.length && !composer.canSeeImages()) {
    composer.showError(composer.imageProblem() || 'The chosen model cannot read images: remove them or choose a 👁 vision model.');
    return;
  }
  const load = state.load;
  let conversation = state.conversation;
  state.busy = true;
  composer.setBusy(true);
  composer.clearError();
  try {
    if (!await changesSaved()) return;
    // The uploads first: a failed one leaves no empty "Untitled" conversation behind.
    const imageIDs = await composer.attachments.ids(items);
    if (!conversation) {
      conversation = await api.createConversation(model, systemPrompt);
      if (load === state.load) {
        history.replaceState(null, '', conversationHash(conversation.id));
        showHeader(conversation);
      }
    }
    const sent = await api.send(conversation.id, text, imageIDs);
    const shown = load === state.load && state.conversation?.id === conversation.id;
    // The box is emptied only where the message was written, and only of the text sent.
    composer.clearDraft(items, shown ? text : null);
    if (shown) {
      chat.append(sent.user_message);
      follow(conversation.id, sent.assistant_message, chat.append(sent.assistant_message));
      if (!conversation.title) showTitle(conversation.id, load);
    }
    sidebar.reload();
  } catch (error) {
    composer.showError(error.message);
    if (error.status === 403) refreshClass();
  } finally {
    state.busy = false;
    composer.setBusy(false);
  }
}

/** A refusal may mean the class was closed meanwhile: read the classes again so the notice says so. */
async function refreshClass() {
  try {
    await classes.reload();
    showClass(state.conversation);
  } catch { /* the error line already says what failed */ }
}

/** The server names a new conversation after its first message: show that name in the header too. */
async function showTitle(id, load) {
  try {
    const { conversation } = await api.conversation(id);
    if (load === state.load && state.conversation?.id === id && byId('rename-form').hidden) showHeader(conversation);
  } catch { /* the header keeps "Untitled" until the conversation is opened again */ }
}

async function stop() {
  const stream = state.stream;
  if (!stream) return;
  try {
    await api.stop(stream.conversationID, stream.messageID);
  } catch (error) {
    composer.showError(error.message);
    if (state.stream === stream) composer.setStreaming(true);
  }
}

async function regenerate() {
  if (state.busy || state.stream || !state.conversation) return;
  const load = state.load;
  state.busy = true;
  composer.setBusy(true);
  composer.clearError();
  try {
    if (!await changesSaved() || load !== state.load) return;
    const conversation = state.conversation;
    const { assistant_message: message } = await api.regenerate(conversation.id);
    if (load !== state.load || state.conversation?.id !== conversation.id) return;
    follow(conversation.id, message, chat.replaceLastAnswer(message));
    // The Regenerate or Retry button went with the old answer: keep keyboard focus in the page.
    if (!document.activeElement || document.activeElement === document.body) composer.focus();
  } catch (error) {
    composer.showError(error.message);
  } finally {
    state.busy = false;
    composer.setBusy(false);
  }
}

/** Keeps a conversation update in `state.saving` until it ends; with several, the first failure counts. */
function track(update) {
  const pending = Promise.all([state.saving, update]).then(([earlier, now]) => earlier || now || '');
  state.saving = pending;
  pending.then(() => { if (state.saving === pending) state.saving = null; });
}

function changeModel(model, previous) {
  const conversation = state.conversation;
  if (!conversation || model === conversation.model) return;
  track((async () => {
    try {
      const updated = await api.updateConversation(conversation.id, { model });
      if (state.conversation?.id === updated.id) state.conversation = updated;
      return '';
    } catch (error) {
      const message = `The model was not changed: ${error.message}`;
      composer.showError(message);
      if (state.conversation?.id === conversation.id) composer.revertModel(previous);
      return message;
    }
  })());
}

function changeSystemPrompt(text) {
  const conversation = state.conversation;
  if (!conversation || text === (conversation.system_prompt || '')) return;
  track((async () => {
    try {
      const updated = await api.updateConversation(conversation.id, { system_prompt: text });
      if (state.conversation?.id === updated.id) state.conversation = updated;
      return '';
    } catch (error) {
      const message = `The system prompt was not saved: ${error.message}`;
      composer.showError(message);
      return message;
    }
  })());
}

// Header: rename, delete (the export links are plain downloads)

function hideRename() {
  byId('rename-form').hidden = true;
  byId('chat-title').hidden = false;
  byId('chat-actions').hidden = !state.conversation;
}

byId('rename').addEventListener('click', () => {
  const input = byId('rename-input');
  input.value = state.conversation?.title || '';
  byId('chat-title').hidden = true;
  byId('chat-actions').hidden = true;
  byId('rename-form').hidden = false;
  input.focus();
  input.select();
});

byId('rename-cancel').addEventListener('click', () => { hideRename(); byId('rename').focus(); });
byId('rename-form').addEventListener('keydown', event => {
  if (event.key === 'Escape') { hideRename(); byId('rename').focus(); }
});

byId('rename-form').addEventListener('submit', async event => {
  event.preventDefault();
  const conversation = state.conversation, title = byId('rename-input').value.trim();
  if (!conversation) return;
  if (!title) { composer.showError('A title cannot be empty.'); return; }
  try {
    const updated = await api.updateConversation(conversation.id, { title });
    if (state.conversation?.id !== updated.id) return;
    showHeader(updated);
    byId('rename').focus();
    sidebar.reload();
  } catch (error) {
    composer.showError(`The conversation was not renamed: ${error.message}`);
  }
});

byId('delete').addEventListener('click', async () => {
  const conversation = state.conversation;
  if (!conversation || !confirm(`Delete “${conversation.title || 'Untitled'}”? This cannot be undone.`)) return;
  try {
    await api.deleteConversation(conversation.id);
    history.replaceState(null, '', location.pathname);
    newChat();
    sidebar.reload();
    composer.focus();
  } catch (error) {
    composer.showError(`The conversation was not deleted: ${error.message}`);
  }
});

byId('new-chat').addEventListener('click', () => {
  sidebar.closeDrawer();
  if (location.hash) history.pushState(null, '', location.pathname);
  newChat();
  composer.focus();
});

// Start

(async () => {
  try {
    await signedIn(await api.me());
  } catch (error) {
    showLogin(error.status === 401 ? '' : error.message);
    if (error.status === 401 && joinCode) {
      byId('signup-code').value = joinCode;
      showSignUp(true);
    }
  } finally {
    byId('boot').remove();
  }
})();
