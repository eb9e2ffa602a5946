// The composer: model picker, system prompt, message box, attachments, Send/Stop and the error line.
// It keeps what was typed until a send succeeds; the caller decides what sending means.

import { byId } from './dom.js';
import { Attachments, carriesFiles } from './images.js';

// The chosen model is remembered per user (`gseai.model.<user id>`): one key for everyone would tell
// the next person on the machine which model was used, and choose it for them.
const MODEL_KEY = 'gseai.model';

/**
 * Wires the composer's elements. Handlers: `onSend()`, `onStop()`, `onModelChange(model, previous)`,
 * `onSystemPromptChange(text)`.
 */
export function createComposer({ onSend, onStop, onModelChange, onSystemPromptChange }) {
  const form = byId('composer'), input = byId('composer-input'), select = byId('model-select');
  const systemPrompt = byId('system-prompt'), systemBox = byId('system-prompt-box');
  const fileInput = byId('attach-input'), attachHint = byId('attach-hint'), modelHint = byId('model-hint');
  const send = byId('send'), stop = byId('stop'), error = byId('composer-error');
  const promptHelp = byId('system-prompt-help');
  const defaultPlaceholder = systemPrompt.placeholder, defaultHelp = promptHelp.textContent;
  let models = [], current = '', streaming = false, busy = false, user = null;
  let policy = null;    // the class policy that applies, or null
  let ownPrompt = '';   // the conversation's own system prompt

  const showError = message => { error.textContent = message; };
  const clearError = () => { error.textContent = ''; };
  const modelInfo = id => models.find(model => model.id === id);
  const imagesAllowed = () => policy?.images_allowed !== false;
  const canSeeImages = () => !!modelInfo(current)?.vision && imagesAllowed();
  const lockedPrompt = () => (policy?.system_prompt_locked && policy.system_prompt) || '';
  const attachments = new Attachments(byId('attachments'), { onChange: refresh, onError: showError });

  function refresh() {
    send.disabled = busy || streaming || !current;
    send.textContent = busy ? 'Sending…' : 'Send';
    stop.hidden = !streaming;
    const model = modelInfo(current);
    fileInput.disabled = !canSeeImages();
    form.classList.toggle('no-vision', !canSeeImages());
    attachHint.textContent = !imagesAllowed() ? 'Your class does not allow images.'
      : !model ? ''
      : model.vision ? ''
      : `${model.display_name || model.id} cannot read images; choose a 👁 vision model to attach one.`;
    modelHint.textContent = model && !model.loaded
      ? 'This model is not loaded yet, so the first answer may take a while to start.' : '';
  }

  /** The system prompt box: the class's locked prompt read-only, or the conversation's own. */
  function showPrompt() {
    const locked = lockedPrompt();
    systemPrompt.readOnly = !!locked;
    systemPrompt.value = locked || ownPrompt;
    systemPrompt.placeholder = (!locked && policy?.system_prompt) || defaultPlaceholder;
    promptHelp.textContent = locked ? 'Your class sets this system prompt; it cannot be changed.'
      : policy?.system_prompt ? 'Left empty, your class\'s default (shown faintly) applies; saved when you leave the field.'
      : defaultHelp;
  }

  function autosize() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, 240)}px`;
  }

  /** Attaches files; `Attachments` says which ones are not images it can take. */
  function addFiles(files) {
    const list = Array.from(files);
    if (!list.length) return;
    if (!canSeeImages()) { showError(attachHint.textContent || 'Choose a model first.'); return; }
    clearError();
    attachments.add(list);
  }

  const modelKey = () => `${MODEL_KEY}.${user}`;

  function preferredModel() {
    let saved = null;
    try { if (user != null) saved = localStorage.getItem(modelKey()); } catch { /* storage may be off */ }
    return (modelInfo(saved) || models.find(model => model.loaded) || models[0] || {}).id || '';
  }

  function selectModel(id) {
    // At most one "(unavailable)" entry, the one of the model shown now: they would pile up otherwise.
    for (const option of [...select.options]) {
      if (option.dataset.unavailable && option.value !== id) option.remove();
    }
    if (id && !modelInfo(id) && ![...select.options].some(option => option.value === id)) {
      // The conversation's model is no longer offered to this user: show it, but as unavailable.
      const option = new Option(`${id} (unavailable)`, id);
      option.dataset.unavailable = 'true';
      select.append(option);
    }
    select.value = id;
    current = select.value;
    refresh();
  }

  form.addEventListener('submit', event => { event.preventDefault(); if (!busy && !streaming) onSend(); });
  input.addEventListener('keydown', event => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      if (!busy && !streaming) onSend();
    }
  });
  input.addEventListener('input', autosize);
  input.addEventListener('paste', event => {
    const files = Array.from(event.clipboardData?.files || []);
    if (!files.some(file => file.type.startsWith('image/'))) return;
    if (!Array.from(event.clipboardData.types).includes('text/plain')) event.preventDefault();
    addFiles(files);
  });
  form.addEventListener('dragover', event => {
    if (!carriesFiles(event.dataTransfer)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = canSeeImages() ? 'copy' : 'none';
    form.classList.add('dropping');
  });
  form.addEventListener('dragleave', event => {
    if (!form.contains(event.relatedTarget)) form.classList.remove('dropping');
  });
  form.addEventListener('drop', event => {
    form.classList.remove('dropping');
    if (!carriesFiles(event.dataTransfer)) return;
    event.preventDefault();
    addFiles(event.dataTransfer.files);
  });
  // A file dropped anywhere else must not make the browser leave the page.
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, event => { if (carriesFiles(event.dataTransfer)) event.preventDefault(); });
  }
  fileInput.addEventListener('change', () => {
    addFiles(fileInput.files);
    fileInput.value = '';
  });
  select.addEventListener('change', () => {
    const previous = current;
    current = select.value;
    try { if (user != null) localStorage.setItem(modelKey(), current); } catch { /* storage may be off */ }
    refresh();
    onModelChange(current, previous);
  });
  systemPrompt.addEventListener('change', () => {
    if (systemPrompt.readOnly) return;
    ownPrompt = systemPrompt.value;
    onSystemPromptChange(systemPrompt.value);
  });
  stop.addEventListener('click', () => { stop.disabled = true; onStop(); });

  return {
    attachments,
    showError,
    clearError,
    modelInfo,
    canSeeImages,
    /** Why images cannot be attached now (the class, or the model), or ''. */
    imageProblem: () => attachHint.textContent,
    text: () => input.value,
    model: () => current,
    systemPrompt: () => (systemPrompt.readOnly ? '' : systemPrompt.value.trim()),
    focus: () => input.focus(),

    /** Whose model preference to read and write (a user id). */
    setUser(id) {
      user = id;
      // Earlier versions kept one preference for everyone on the machine.
      try { localStorage.removeItem(MODEL_KEY); } catch { /* storage may be off */ }
    },

    /** Fills the model picker; vision models say so. */
    setModels(list) {
      models = list;
      select.replaceChildren(...list.map(model =>
        new Option(`${model.display_name || model.id}${model.vision ? ' — 👁 vision' : ''}`, model.id)));
      if (!list.length) showError('No models are available to your account. Ask your instructor.');
      selectModel(modelInfo(current) ? current : preferredModel());
    },

    /** Shows a conversation's model and system prompt, or a new chat's defaults (`null`). */
    setConversation(conversation) {
      selectModel(conversation ? conversation.model : preferredModel());
      ownPrompt = conversation?.system_prompt || '';
      showPrompt();
      systemBox.open = !!systemPrompt.value;
    },

    /** Applies the rules of the class whose policy applies (`null`: none): images, the system prompt. */
    setClassPolicy(classPolicy) {
      policy = classPolicy || null;
      if (!systemPrompt.readOnly) ownPrompt = systemPrompt.value;
      showPrompt();
      if (lockedPrompt()) systemBox.open = true;
      refresh();
    },

    /** Puts the model picker back after a failed change. */
    revertModel: selectModel,

    setStreaming(on) {
      streaming = on;
      stop.disabled = false;
      refresh();
    },

    setBusy(on) {
      busy = on;
      refresh();
    },

    /**
     * After a successful send: takes away the attachments `items` that went with it and, given the sent
     * `text`, empties the message box if it still holds just that. What was typed or attached while the
     * message was on its way stays for the next one.
     */
    clearDraft(items, text = null) {
      attachments.discard(items);
      if (text != null && input.value === text) {
        input.value = '';
        autosize();
      }
    },
  };
}
