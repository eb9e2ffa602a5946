// Per-day usage bars as SVG built node by node (no markup strings), with a <title>, a <desc> and a
// visible text summary for people who cannot see the chart.
import { h } from '../dom.js';

const NS = 'http://www.w3.org/2000/svg';
let serial = 0;

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, String(v));
  el.append(...kids.filter(k => k != null));
  return el;
}

/** Every UTC day from `since` (YYYY-MM-DD) to today. */
export function dayRange(since) {
  const out = [];
  const end = new Date().toISOString().slice(0, 10);
  for (let d = new Date(`${since}T00:00:00Z`); out.length < 400; d = new Date(d.getTime() + 86400000)) {
    const s = d.toISOString().slice(0, 10);
    out.push(s);
    if (s >= end) break;
  }
  return out;
}

/** Sums usage rows (`day`, `requests`, `input_tokens`, `output_tokens`) into a map day → {requests, tokens}. */
export function addUsage(totals, rows) {
  for (const r of rows || []) {
    const t = totals.get(r.day) || { requests: 0, tokens: 0 };
    t.requests += r.requests || 0;
    t.tokens += (r.input_tokens || 0) + (r.output_tokens || 0);
    totals.set(r.day, t);
  }
  return totals;
}

/** A figure with the chart of tokens per day and a summary sentence. */
export function usageChart(label, since, totals, testid = 'usage-chart') {
  const days = dayRange(since);
  const values = days.map(d => totals.get(d) || { requests: 0, tokens: 0 });
  const max = Math.max(1, ...values.map(v => v.tokens));
  const sum = values.reduce((a, v) => ({ requests: a.requests + v.requests, tokens: a.tokens + v.tokens }), { requests: 0, tokens: 0 });
  let busiest = 0;
  values.forEach((v, i) => { if (v.tokens > values[busiest].tokens) busiest = i; });
  const summary = sum.tokens || sum.requests
    ? `${sum.tokens.toLocaleString()} tokens in ${sum.requests.toLocaleString()} requests from ${days[0]} to ${days.at(-1)}; busiest day ${days[busiest]} (${values[busiest].tokens.toLocaleString()} tokens).`
    : `No usage from ${days[0]} to ${days.at(-1)}.`;

  const W = 600, H = 180, L = 48, B = 22, T = 8;
  const bw = (W - L - 4) / days.length;
  const id = `chart-${++serial}`;
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-labelledby': `${id}-t ${id}-d`, class: 'chart' },
    svg('title', { id: `${id}-t` }, `${label}: tokens per day`),
    svg('desc', { id: `${id}-d` }, summary),
    svg('line', { x1: L, y1: H - B, x2: W, y2: H - B, class: 'axis' }),
    svg('line', { x1: L, y1: T, x2: L, y2: H - B, class: 'axis' }),
    svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end', class: 'tick' }, compact(max)),
    svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end', class: 'tick' }, '0'));
  values.forEach((v, i) => {
    const bh = (v.tokens / max) * (H - B - T);
    chart.append(svg('rect', { x: (L + 2 + i * bw).toFixed(1), y: (H - B - bh).toFixed(1), width: Math.max(1, bw - 2).toFixed(1),
      height: bh.toFixed(1), class: 'bar' },
      svg('title', null, `${days[i]}: ${v.tokens.toLocaleString()} tokens, ${v.requests.toLocaleString()} requests`)));
  });
  const ticks = [...new Set([0, Math.floor((days.length - 1) / 2), days.length - 1])];
  for (const i of ticks) {
    const anchor = i === 0 ? 'start' : i === days.length - 1 ? 'end' : 'middle';
    const x = i === 0 ? L + 2 : i === days.length - 1 ? W : L + 2 + (i + .5) * bw;
    chart.append(svg('text', { x, y: H - 6, 'text-anchor': anchor, class: 'tick' }, days[i].slice(5)));
  }
  return h('figure', { class: 'chart-box', 'data-testid': testid }, chart, h('figcaption', { class: 'small' }, summary));
}

function compact(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n);
}
