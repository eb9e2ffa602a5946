// Markdown for model answers, without ever parsing HTML.
//
// `parse` is pure (no DOM; tested with Node in Tests/web/): text → a small tree of blocks and inlines.
// `render` builds DOM nodes from that tree with createElement/textContent only, so raw HTML in an answer
// is shown as literal text and nothing a model writes can become markup. Links are made only for
// http(s) URLs. Unclosed constructs (a fence still streaming) render as far as they go.
//
// Tree: blocks {t:'p'|'h'|'pre'|'quote'|'ul'|'ol'|'table'|'hr'}; inlines are strings or
// {t:'strong'|'em'|'del'|'code'|'a'|'br'}.

const PUNCT = /[!-/:-@[-`{-~]/;
const UPUNCT = /[\p{P}\p{S}]/u;
const SPACE = /\s/;
const BLANK = /^\s*$/;
const FENCE = /^( {0,3})(`{3,}|~{3,})(.*)$/;
const FENCE_END = /^ {0,3}(`{3,}|~{3,})[ \t]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const HR = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
const SETEXT = /^ {0,3}(=+|-{2,})[ \t]*$/;
const DELIM_ROW = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;
const HTTP = /^https?:\/\/\S+$/i;
const BARE_URL = /https?:\/\/[^\s<>]+/iy;
const AUTOLINK = /<(https?:\/\/[^\s<>]+)>/iy;
const ENTITY = /&(#\d{1,7}|#[xX][\da-fA-F]{1,6}|[a-zA-Z]{2,8});/y;
const NAMED = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0', copy: '©', reg: '®',
  mdash: '—', ndash: '–', hellip: '…', laquo: '«', raquo: '»', times: '×' };

/** Parses Markdown text into a tree of blocks (pure: no DOM). */
export function parse(text) {
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n')
    .map(line => line.replace(/^[ \t]+/, ws => ws.replace(/\t/g, '    ')));
  return blocks(lines);
}

function startsBlock(line) {
  const fence = FENCE.exec(line);
  return (fence && !(fence[2][0] === '`' && fence[3].includes('`'))) || HEADING.test(line) || HR.test(line)
    || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines) {
  const out = [];
  let para = null;
  const flush = () => {
    if (para) out.push({ t: 'p', c: inline(para.join('\n').replace(/\s+$/, '')) });
    para = null;
  };
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    let m;
    if (BLANK.test(line)) { flush(); i++; continue; }
    if (para && (m = SETEXT.exec(line))) {
      out.push({ t: 'h', n: m[1][0] === '=' ? 1 : 2, c: inline(para.join('\n').trim()) });
      para = null; i++; continue;
    }
    if ((m = FENCE.exec(line)) && !(m[2][0] === '`' && m[3].includes('`'))) { flush(); i = fence(lines, i, m, out); continue; }
    if ((m = HEADING.exec(line))) { flush(); out.push({ t: 'h', n: m[1].length, c: inline(m[2] || '') }); i++; continue; }
    if (HR.test(line)) { flush(); out.push({ t: 'hr' }); i++; continue; }
    if (QUOTE.test(line)) { flush(); i = quote(lines, i, out); continue; }
    // A list interrupts a paragraph only with content, and an ordered one only when it starts at 1.
    if ((m = ITEM.exec(line)) && (!para || (m[4] && m[4].trim() && (!/\d/.test(m[2]) || parseInt(m[2], 10) === 1)))) {
      flush(); i = list(lines, i, out); continue;
    }
    if (line.includes('|') && i + 1 < lines.length && lines[i + 1].includes('|') && DELIM_ROW.test(lines[i + 1])
      && splitRow(line).length === splitRow(lines[i + 1]).length) {
      flush(); i = table(lines, i, out); continue;
    }
    (para ||= []).push(line.replace(/^\s+/, ''));
    i++;
  }
  flush();
  return out;
}

function fence(lines, i, m, out) {
  const indent = new RegExp(`^ {0,${m[1].length}}`), mark = m[2];
  const body = [];
  for (i++; i < lines.length; i++) {
    const end = FENCE_END.exec(lines[i]);
    if (end && end[1][0] === mark[0] && end[1].length >= mark.length) { i++; break; }
    body.push(lines[i].replace(indent, ''));
  }
  out.push({ t: 'pre', lang: m[3].trim().split(/\s+/)[0], v: body.join('\n') });
  return i;
}

function quote(lines, i, out) {
  const body = [];
  for (; i < lines.length; i++) {
    const m = QUOTE.exec(lines[i]);
    if (m) body.push(m[1]);
    // Lazy continuation: a plain line right after quoted text continues the quote's paragraph.
    else if (!BLANK.test(lines[i]) && !BLANK.test(body[body.length - 1]) && !startsBlock(lines[i])) body.push(lines[i]);
    else break;
  }
  out.push({ t: 'quote', c: blocks(body) });
  return i;
}

function list(lines, i, out) {
  const first = ITEM.exec(lines[i]);
  const ordered = /\d/.test(first[2]), kind = first[2].slice(-1);
  const node = { t: ordered ? 'ol' : 'ul', start: ordered ? parseInt(first[2], 10) : 1, tight: true, items: [] };
  let gap = false;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || HR.test(lines[i]) || /\d/.test(m[2]) !== ordered || m[2].slice(-1) !== kind) break;
    if (gap) node.tight = false;
    const base = m[1].length;
    const inner = base + m[2].length + (m[3] && m[3].length <= 4 ? m[3].length : 1);
    const body = [m[4] || ''];
    for (i++; i < lines.length; i++) {
      const line = lines[i];
      if (BLANK.test(line)) { body.push(''); continue; }
      const indent = line.length - line.trimStart().length;
      if (indent >= inner) { body.push(line.slice(inner)); continue; }
      // Lenient nesting: models often indent sub-lists by two spaces under "1. ".
      if (indent >= base + 2 && ITEM.test(line.trimStart())) { body.push(line.slice(indent)); continue; }
      if (body[body.length - 1] !== '' && !startsBlock(line)) { body.push(line.trimStart()); continue; }
      break;
    }
    gap = false;
    while (body.length > 1 && body[body.length - 1] === '') { body.pop(); gap = true; }
    // Loose when a blank line separates two of the item's own blocks.
    for (let k = 1; k < body.length - 1; k++) {
      if (body[k] === '' && body[k + 1] !== '' && !/^\s/.test(body[k + 1])) node.tight = false;
    }
    node.items.push(blocks(body));
  }
  out.push(node);
  return i;
}

function splitRow(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  const cells = [];
  let cell = '';
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '\\' && s[i + 1] === '|') { cell += '|'; i++; }
    else if (s[i] === '|') { cells.push(cell.trim()); cell = ''; }
    else cell += s[i];
  }
  cells.push(cell.trim());
  return cells;
}

function table(lines, i, out) {
  const head = splitRow(lines[i]);
  const align = splitRow(lines[i + 1]).map(c =>
    c.endsWith(':') ? (c.startsWith(':') ? 'center' : 'right') : c.startsWith(':') ? 'left' : '');
  const rows = [];
  for (i += 2; i < lines.length && !BLANK.test(lines[i]) && lines[i].includes('|'); i++) {
    const cells = splitRow(lines[i]);
    rows.push(align.map((_, k) => inline(cells[k] || '')));
  }
  out.push({ t: 'table', align, head: head.map(c => inline(c)), rows });
  return i;
}

// Inlines: one scan that produces text, nodes and emphasis delimiter runs, then the CommonMark
// delimiter algorithm pairs the runs (`**a *b* c**`, intraword `snake_case` left alone).
function inline(src, noLinks = false) {
  const out = [];
  let buf = '';
  const flush = () => { if (buf) out.push(buf); buf = ''; };
  for (let i = 0; i < src.length;) {
    const c = src[i];
    let m;
    if (c === '\\' && i + 1 < src.length) {
      const next = src[i + 1];
      if (next === '\n') { flush(); out.push({ t: 'br' }); i += 2; continue; }
      if (PUNCT.test(next)) { buf += next; i += 2; continue; }
    }
    if (c === '\n') {
      const hard = / {2,}$/.test(buf);
      buf = buf.replace(/ +$/, '');
      if (hard) { flush(); out.push({ t: 'br' }); } else buf += '\n';
      for (i++; src[i] === ' ';) i++;
      continue;
    }
    if (c === '`') {
      const span = codeSpan(src, i);
      if (span) { flush(); out.push(span.node); i = span.end; continue; }
      let j = i;
      while (src[j] === '`') j++;
      buf += src.slice(i, j); i = j; continue;
    }
    if (c === '&' && (m = sticky(ENTITY, src, i))) {
      const decoded = entity(m[1]);
      if (decoded) { buf += decoded; i += m[0].length; continue; }
    }
    if (!noLinks) {
      if (c === '[' || (c === '!' && src[i + 1] === '[')) {
        const link = parseLink(src, i);
        if (link) { flush(); out.push(link.node); i = link.end; continue; }
      }
      if (c === '<' && (m = sticky(AUTOLINK, src, i))) {
        flush(); out.push({ t: 'a', href: m[1], c: [m[1]] }); i += m[0].length; continue;
      }
      if ((c === 'h' || c === 'H') && (i === 0 || /[\s(*_~"'[]/.test(src[i - 1])) && (m = sticky(BARE_URL, src, i))) {
        const url = trimURL(m[0]);
        if (url.length > 8) { flush(); out.push({ t: 'a', href: url, c: [url] }); i += url.length; continue; }
      }
    }
    if (c === '*' || c === '_' || c === '~') {
      let j = i;
      while (src[j] === c) j++;
      const n = j - i;
      if (c === '~' && n !== 2) { buf += src.slice(i, j); i = j; continue; }
      const before = i ? src[i - 1] : ' ', after = j < src.length ? src[j] : ' ';
      const ws = ch => SPACE.test(ch), pu = ch => UPUNCT.test(ch);
      const left = !ws(after) && (!pu(after) || ws(before) || pu(before));
      const right = !ws(before) && (!pu(before) || ws(after) || pu(after));
      flush();
      out.push({
        d: c, n, len: n,
        open: c === '_' ? left && (!right || pu(before)) : left,
        close: c === '_' ? right && (!left || pu(after)) : right,
      });
      i = j; continue;
    }
    buf += c; i++;
  }
  flush();
  return emphasis(out);
}

function sticky(re, src, i) {
  re.lastIndex = i;
  return re.exec(src);
}

function entity(name) {
  if (name[0] !== '#') return NAMED[name] || '';
  const code = name[1] === 'x' || name[1] === 'X' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
  return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : '\ufffd';
}

function codeSpan(src, i) {
  let j = i;
  while (src[j] === '`') j++;
  const n = j - i;
  for (let k = j; (k = src.indexOf('`', k)) !== -1;) {
    let e = k;
    while (src[e] === '`') e++;
    if (e - k === n) {
      let v = src.slice(j, k).replace(/\n/g, ' ');
      if (v.length >= 2 && v[0] === ' ' && v[v.length - 1] === ' ' && v.trim()) v = v.slice(1, -1);
      return { node: { t: 'code', v }, end: e };
    }
    k = e;
  }
  return null;
}

/** `[text](url "title")` or `![alt](url)`; links only for http(s), anything else stays literal text. */
function parseLink(src, start) {
  const image = src[start] === '!';
  const open = image ? start + 1 : start;
  let depth = 0, j = open;
  for (; j < src.length; j++) {
    if (src[j] === '\\') j++;
    else if (src[j] === '[') depth++;
    else if (src[j] === ']' && --depth === 0) break;
  }
  if (j >= src.length || src[j + 1] !== '(') return null;
  let k = j + 2, href;
  const skipSpace = () => { while (src[k] === ' ' || src[k] === '\n') k++; };
  skipSpace();
  if (src[k] === '<') {
    const e = src.indexOf('>', k);
    if (e < 0) return null;
    href = src.slice(k + 1, e); k = e + 1;
  } else {
    const s = k;
    for (let parens = 0; k < src.length; k++) {
      const ch = src[k];
      if (ch === '\\') { k++; continue; }
      if (SPACE.test(ch)) break;
      if (ch === '(') parens++;
      else if (ch === ')' && parens-- === 0) break;
    }
    href = src.slice(s, k);
  }
  skipSpace();
  if (src[k] === '"' || src[k] === "'" || src[k] === '(') {
    const e = src.indexOf(src[k] === '(' ? ')' : src[k], k + 1);
    if (e < 0) return null;
    k = e + 1;
    skipSpace();
  }
  if (src[k] !== ')') return null;
  const end = k + 1, label = src.slice(open + 1, j);
  href = href.replace(/\\([!-/:-@[-`{-~])/g, '$1');
  if (!HTTP.test(href)) return { node: src.slice(start, end), end };
  return { node: { t: 'a', href, c: image ? ['Image: ' + (label || href)] : inline(label, true) }, end };
}

/** GFM autolink end: no trailing punctuation, no unbalanced closing parenthesis. */
function trimURL(url) {
  for (;;) {
    const last = url[url.length - 1];
    if (/[?!.,:;*_~'"]/.test(last)) url = url.slice(0, -1);
    else if (last === ')' && url.split('(').length < url.split(')').length) url = url.slice(0, -1);
    else return url;
  }
}

function emphasis(nodes) {
  for (let i = 0; i < nodes.length; i++) {
    const closer = nodes[i];
    if (!closer.d || !closer.close) continue;
    while (closer.n > 0) {
      let j = i - 1;
      for (; j >= 0; j--) {
        const op = nodes[j];
        if (op.d !== closer.d || !op.open || !op.n) continue;
        if (closer.d === '~' ? op.n !== closer.n
          : (op.close || closer.open) && (op.len + closer.len) % 3 === 0 && (op.len % 3 || closer.len % 3)) continue;
        break;
      }
      if (j < 0) break;
      const op = nodes[j];
      const use = closer.d === '~' ? 2 : op.n >= 2 && closer.n >= 2 ? 2 : 1;
      op.n -= use;
      closer.n -= use;
      const inner = nodes.splice(j + 1, i - j - 1);
      nodes.splice(j + 1, 0, { t: closer.d === '~' ? 'del' : use === 2 ? 'strong' : 'em', c: finish(inner) });
      i = j + 2;
      if (!op.n) { nodes.splice(j, 1); i--; }
    }
    if (!closer.n) { nodes.splice(i, 1); i--; }
  }
  return finish(nodes);
}

/** Unmatched delimiter runs become text again; neighbouring strings are joined. */
function finish(nodes) {
  const out = [];
  for (const node of nodes) {
    const item = node.d ? node.d.repeat(node.n) : node;
    if (item === '') continue;
    if (typeof item === 'string' && typeof out[out.length - 1] === 'string') out[out.length - 1] += item;
    else out.push(item);
  }
  return out;
}

/** Renders Markdown text as a DocumentFragment (DOM built node by node; no HTML parsing). */
export function render(text, doc = globalThis.document) {
  const frag = doc.createDocumentFragment();
  for (const node of parse(text)) frag.append(build(node, doc, false));
  return frag;
}

function build(node, doc, tight) {
  if (typeof node === 'string') return doc.createTextNode(node);
  const el = (tag, kids = []) => {
    const e = doc.createElement(tag);
    for (const kid of kids) e.append(build(kid, doc, false));
    return e;
  };
  switch (node.t) {
    case 'p': {
      if (!tight) return el('p', node.c);
      const frag = doc.createDocumentFragment();
      for (const kid of node.c) frag.append(build(kid, doc, false));
      return frag;
    }
    case 'h': return el('h' + node.n, node.c);
    case 'hr': return el('hr');
    case 'br': return el('br');
    case 'strong': case 'em': case 'del': return el(node.t, node.c);
    case 'code': {
      const code = el('code');
      code.textContent = node.v;
      return code;
    }
    case 'a': {
      const a = el('a', node.c);
      a.setAttribute('href', node.href);
      a.setAttribute('target', '_blank');
      a.setAttribute('rel', 'noopener noreferrer');
      return a;
    }
    case 'quote': return el('blockquote', node.c);
    case 'ul': case 'ol': {
      const list = el(node.t);
      if (node.t === 'ol' && node.start !== 1) list.setAttribute('start', String(node.start));
      for (const item of node.items) {
        const li = el('li');
        for (const block of item) li.append(build(block, doc, node.tight));
        list.append(li);
      }
      return list;
    }
    case 'table': {
      const row = (cells, tag) => {
        const tr = el('tr');
        cells.forEach((cell, k) => {
          const td = el(tag, cell);
          if (node.align[k]) td.className = 'al-' + node.align[k];
          tr.append(td);
        });
        return tr;
      };
      const thead = el('thead'), tbody = el('tbody'), table = el('table'), wrap = el('div');
      thead.append(row(node.head, 'th'));
      for (const cells of node.rows) tbody.append(row(cells, 'td'));
      table.append(thead);
      if (node.rows.length) table.append(tbody);
      wrap.className = 'table-wrap';
      wrap.append(table);
      return wrap;
    }
    case 'pre': return codeBlock(node, doc);
  }
  return doc.createTextNode('');
}

function codeBlock(node, doc) {
  const wrap = doc.createElement('div'), bar = doc.createElement('div'), label = doc.createElement('span');
  const button = doc.createElement('button'), pre = doc.createElement('pre'), code = doc.createElement('code');
  const lang = (node.lang || '').replace(/[^\w+#.-]/g, '');
  wrap.className = 'codeblock';
  bar.className = 'codebar';
  label.textContent = lang || 'code';
  button.setAttribute('type', 'button');
  button.className = 'copy';
  button.textContent = 'Copy';
  button.addEventListener('click', () => copy(node.v, button));
  if (lang) code.className = 'language-' + lang;
  code.textContent = node.v;
  bar.append(label, button);
  pre.append(code);
  wrap.append(bar, pre);
  return wrap;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    // The clipboard API needs a secure context (HTTPS or localhost) and permission.
    button.textContent = 'Copy failed';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}
