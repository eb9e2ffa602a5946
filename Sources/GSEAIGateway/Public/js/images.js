// Image attachments: checked and downscaled in the browser, uploaded as soon as they are attached,
// shown as thumbnails with a remove button. Nothing is lost on failure: a failed upload is retried
// on the next send.

import { api } from './api.js';
import { h } from './dom.js';

const TYPES = ['image/png', 'image/jpeg', 'image/webp', 'image/gif'];
const MAX_SIDE = 1600;
const REENCODE_ABOVE_BYTES = 2 * 1024 * 1024;

/** The bytes to upload: photos over 1600 px (or heavy ones) become JPEG; small images stay as they are. */
export async function prepareImage(file) {
  const name = file.name || 'The pasted image';
  if (!TYPES.includes(file.type)) throw new Error(`${name} is not a PNG, JPEG, WebP or GIF image.`);
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    img.src = url;
    try { await img.decode(); } catch { throw new Error(`${name} could not be read as an image.`); }
    const width = img.naturalWidth, height = img.naturalHeight, side = Math.max(width, height);
    // Animated GIFs would lose their frames; small images are sent untouched.
    if (side <= MAX_SIDE && (file.size <= REENCODE_ABOVE_BYTES || file.type === 'image/gif')) return file;
    const scale = Math.min(1, MAX_SIDE / side);
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    const context = canvas.getContext('2d');
    context.fillStyle = '#fff'; // JPEG has no transparency
    context.fillRect(0, 0, canvas.width, canvas.height);
    context.drawImage(img, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise(resolve => canvas.toBlob(resolve, 'image/jpeg', 0.85));
    if (!blob) throw new Error(`${name} could not be resized.`);
    return side > MAX_SIDE || blob.size < file.size ? blob : file;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** True when a drag or paste carries files. */
export const carriesFiles = transfer => !!transfer && Array.from(transfer.types || []).includes('Files');

/** The attachments of the message being written, rendered into `list` (a `<ul>`). */
export class Attachments {
  constructor(list, { onChange, onError }) {
    this.list = list;
    this.items = [];
    this.onChange = onChange;
    this.onError = onError;
  }

  get count() { return this.items.length; }

  /** Adds image files (others are refused with a message) and starts uploading them. */
  add(files) {
    for (const file of files) {
      if (!TYPES.includes(file.type)) {
        this.onError(`${file.name || 'That file'} is not a PNG, JPEG, WebP or GIF image.`);
        continue;
      }
      const item = { file, name: file.name || 'pasted image', preview: URL.createObjectURL(file), id: null, error: null, upload: null };
      this.items.push(item);
      this.#upload(item).catch(error => this.onError(error.message));
    }
    this.render();
  }

  /**
   * The uploaded images' ids of `items` (all by default), uploading (again) whatever has not made it yet.
   * Rejects on the first failure.
   */
  ids(items = this.items) {
    return Promise.all(items.map(item => item.id ?? this.#upload(item)));
  }

  remove(item) {
    const index = this.items.indexOf(item);
    if (index < 0) return;
    this.items.splice(index, 1);
    URL.revokeObjectURL(item.preview);
    this.render();
    const buttons = this.list.querySelectorAll('button');
    (buttons[Math.min(index, buttons.length - 1)] || document.getElementById('composer-input')).focus();
  }

  /** Takes away `items` (the ones a message was sent with) and leaves those attached since; focus stays. */
  discard(items) {
    for (const item of items) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter(item => !items.includes(item));
    this.render();
  }

  #upload(item) {
    if (!item.upload) {
      item.error = null;
      item.upload = prepareImage(item.file)
        .then(blob => api.uploadImage(blob))
        .then(image => { item.id = image.id; return image.id; })
        .catch(error => {
          item.error = error.message;
          item.upload = null;
          throw new Error(`${item.name}: ${error.message}`);
        })
        .finally(() => this.render());
      this.render();
    }
    return item.upload;
  }

  render() {
    this.list.replaceChildren(...this.items.map((item, index) => {
      const state = item.id ? '' : item.error ? 'Upload failed' : 'Uploading…';
      return h('li', { class: item.error ? 'failed' : item.id ? 'ready' : 'pending' },
        h('img', { src: item.preview, alt: `Image ${index + 1}: ${item.name}` }),
        state ? h('span', { class: 'state', text: state }) : null,
        h('button', {
          type: 'button', class: 'remove', 'aria-label': `Remove ${item.name}`,
          'data-testid': 'remove-attachment', onclick: () => this.remove(item),
        }, '×'));
    }));
    this.onChange();
  }
}
