// Tests for Public/js/markdown.js: the pure parser, and the DOM builder over a tiny fake document.
// Run: node --test Tests/web/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parse, render } from '../../Public/js/markdown.js';

/** A fake document just big enough for `render`, serialising to HTML-like text for assertions. */
class FakeNode {
  constructor(name) { this.name = name; this.kids = []; this.attrs = {}; this.listeners = {}; }
  append(...kids) {
    for (const kid of kids) {
      if (kid.name === '#fragment') this.kids.push(...kid.kids);
      else this.kids.push(kid);
    }
  }
  setAttribute(name, value) { this.attrs[name] = String(value); }
  addEventListener(type, fn) { this.listeners[type] = fn; }
  set className(value) { this.attrs.class = value; }
  set textContent(value) { this.kids = [new FakeText(value)]; }
  get html() {
    if (this.name === '#fragment') return this.kids.map(k => k.html).join('');
    const attrs = Object.entries(this.attrs).map(([k, v]) => ` ${k}="${v}"`).join('');
    return `<${this.name}${attrs}>${this.kids.map(k => k.html).join('')}</${this.name}>`;
  }
}
class FakeText {
  constructor(text) { this.text = String(text); }
  get html() { return this.text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'); }
}
const doc = {
  createElement: name => new FakeNode(name),
  createTextNode: text => new FakeText(text),
  createDocumentFragment: () => new FakeNode('#fragment'),
};
const html = md => render(md, doc).html;

test('paragraphs, emphasis, strike, inline code', () => {
  assert.equal(html('a **b** *c* ~~d~~ `e`'), '<p>a <strong>b</strong> <em>c</em> <del>d</del> <code>e</code></p>');
  assert.equal(html('***both***'), '<p><em><strong>both</strong></em></p>');
  assert.equal(html('**bold *it* bold**'), '<p><strong>bold <em>it</em> bold</strong></p>');
  assert.equal(html('snake_case_name and 2 * 3 * 4'), '<p>snake_case_name and 2 * 3 * 4</p>');
  assert.equal(html('__u__ _i_'), '<p><strong>u</strong> <em>i</em></p>');
  assert.equal(html('~5 minutes ~10'), '<p>~5 minutes ~10</p>');
  assert.equal(html('**unclosed'), '<p>**unclosed</p>');
  assert.equal(html('`` a ` b ``'), '<p><code>a ` b</code></p>');
  assert.equal(html('\\*not\\* em'), '<p>*not* em</p>');
  assert.equal(html('one\ntwo'), '<p>one\ntwo</p>');
  assert.equal(html('one  \ntwo'), '<p>one<br></br>two</p>');
  assert.equal(html('a &amp; b &lt;x&gt; &#169;'), '<p>a &amp; b &lt;x&gt; ©</p>');
});

test('headings, rules, quotes', () => {
  assert.equal(html('# One\n## Two ##\n###### Six'), '<h1>One</h1><h2>Two</h2><h6>Six</h6>');
  assert.equal(html('#hashtag'), '<p>#hashtag</p>');
  assert.equal(html('Title\n====='), '<h1>Title</h1>');
  assert.equal(html('a\n\n---\n\nb'), '<p>a</p><hr></hr><p>b</p>');
  assert.equal(html('> quoted **x**\nlazy\n\nafter'), '<blockquote><p>quoted <strong>x</strong>\nlazy</p></blockquote><p>after</p>');
  assert.equal(html('> # H\n> - item'), '<blockquote><h1>H</h1><ul><li>item</li></ul></blockquote>');
});

test('lists: tight, loose, ordered, nested', () => {
  assert.equal(html('- a\n- b'), '<ul><li>a</li><li>b</li></ul>');
  assert.equal(html('- a\n\n- b'), '<ul><li><p>a</p></li><li><p>b</p></li></ul>');
  assert.equal(html('3. c\n4. d'), '<ol start="3"><li>c</li><li>d</li></ol>');
  assert.equal(html('- a\n  - b\n    - c\n- d'), '<ul><li>a<ul><li>b<ul><li>c</li></ul></li></ul></li><li>d</li></ul>');
  assert.equal(html('1. one\n  - sub\n2. two'), '<ol><li>one<ul><li>sub</li></ul></li><li>two</li></ol>');
  assert.equal(html('1. one\n   continued\n2. two'), '<ol><li>one\ncontinued</li><li>two</li></ol>');
  assert.equal(html('text\n- item'), '<p>text</p><ul><li>item</li></ul>');
  assert.equal(html('The year\n2024. was long'), '<p>The year\n2024. was long</p>');
  assert.equal(html('* * *'), '<hr></hr>');
  assert.equal(html('- a\n* b'), '<ul><li>a</li></ul><ul><li>b</li></ul>');
  assert.equal(html('- a\n\n  ```js\n  x\n  ```'), '<ul><li><p>a</p><div class="codeblock"><div class="codebar"><span>js</span><button type="button" class="copy">Copy</button></div><pre><code class="language-js">x</code></pre></div></li></ul>');
});

test('fenced code: language class, copy button, unclosed while streaming, no markdown inside', () => {
  const tree = parse('```python\nprint("**hi**")\n```\nafter');
  assert.deepEqual(tree, [{ t: 'pre', lang: 'python', v: 'print("**hi**")' }, { t: 'p', c: ['after'] }]);
  assert.deepEqual(parse('```js\nlet a = 1;\nlet b'), [{ t: 'pre', lang: 'js', v: 'let a = 1;\nlet b' }]);
  assert.deepEqual(parse('~~~\n```\n~~~'), [{ t: 'pre', lang: '', v: '```' }]);
  const out = html('```html\n<script>alert(1)</script>\n```');
  assert.match(out, /<code class="language-html">&lt;script&gt;alert\(1\)&lt;\/script&gt;<\/code>/);
  const button = render('```\nx\n```', doc).kids[0].kids[0].kids[1];
  assert.equal(button.name, 'button');
  assert.equal(typeof button.listeners.click, 'function');
  assert.match(html('```a"b<c\nx\n```'), /<code class="language-abc">/);
});

test('tables with alignment, escaped pipes and ragged rows', () => {
  assert.equal(html('| a | b | c |\n|:--|:-:|--:|\n| 1 | **2** | 3 |\n| x \\| y |'),
    '<div class="table-wrap"><table><thead><tr><th class="al-left">a</th><th class="al-center">b</th><th class="al-right">c</th></tr></thead>'
    + '<tbody><tr><td class="al-left">1</td><td class="al-center"><strong>2</strong></td><td class="al-right">3</td></tr>'
    + '<tr><td class="al-left">x | y</td><td class="al-center"></td><td class="al-right"></td></tr></tbody></table></div>');
  assert.equal(html('intro\n| a | b |\n| - | - |\n| 1 | 2 |').startsWith('<p>intro</p><div class="table-wrap">'), true);
  assert.equal(html('a | b\n---'), '<h2>a | b</h2>');
});

test('links: http(s) only, new tab, bare URLs trimmed', () => {
  assert.equal(html('[UB](https://buffalo.edu "t")'), '<p><a href="https://buffalo.edu" target="_blank" rel="noopener noreferrer">UB</a></p>');
  assert.equal(html('see https://example.com/a_b_(c)).'), '<p>see <a href="https://example.com/a_b_(c)" target="_blank" rel="noopener noreferrer">https://example.com/a_b_(c)</a>).</p>');
  assert.equal(html('<https://x.org/p>'), '<p><a href="https://x.org/p" target="_blank" rel="noopener noreferrer">https://x.org/p</a></p>');
  assert.equal(html('**https://x.org**'), '<p><strong><a href="https://x.org" target="_blank" rel="noopener noreferrer">https://x.org</a></strong></p>');
  assert.equal(html('[**b** https://in.side](https://out.side)'), '<p><a href="https://out.side" target="_blank" rel="noopener noreferrer"><strong>b</strong> https://in.side</a></p>');
  assert.equal(html('![a cat](https://x.org/cat.png)'), '<p><a href="https://x.org/cat.png" target="_blank" rel="noopener noreferrer">Image: a cat</a></p>');
  assert.equal(html('[a](/relative) [b]'), '<p>[a](/relative) [b]</p>');
});

test('nothing a model writes becomes markup or a dangerous link', () => {
  const cases = [
    '<script>alert(1)</script>',
    '<img src=x onerror=alert(1)>',
    '[x](javascript:alert(1))',
    '[x](JaVaScRiPt:alert(1))',
    '[x](data:text/html;base64,PHNjcmlwdD4=)',
    '![x](javascript:alert(1))',
    '<javascript:alert(1)>',
    '[x](<javascript:alert(1)>)',
    'javascript:alert(1)',
    '[x](vbscript:msgbox)',
    '<a href="javascript:alert(1)">x</a>',
  ];
  for (const md of cases) {
    const out = html(md);
    assert.doesNotMatch(out, /<a |<script|<img/, md);
  }
  assert.equal(html('<b>hi</b>'), '<p>&lt;b&gt;hi&lt;/b&gt;</p>');
  assert.equal(html('[x](javascript:alert(1))'), '<p>[x](javascript:alert(1))</p>');
});

test('every prefix of a long answer parses (streaming)', () => {
  const answer = '# Plan\n\n1. **Read** the `docs`\n   - see https://x.org\n2. Write\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n> note\n\n```js\nconst x = `y`;\n```\nDone ~~not~~.';
  for (let i = 0; i <= answer.length; i++) html(answer.slice(0, i));
  assert.ok(html(answer).endsWith('<p>Done <del>not</del>.</p>'));
});

test('pathological input stays fast', () => {
  const start = Date.now();
  html('*a '.repeat(3000) + '[('.repeat(2000) + '`'.repeat(500) + '\n- '.repeat(2000));
  assert.ok(Date.now() - start < 2000);
});
