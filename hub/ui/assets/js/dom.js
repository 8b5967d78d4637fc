// DOM building and formatting helpers shared by the views.
//
// Every view builds its nodes with h() and svg(): text goes in as text
// nodes, never as HTML, so names coming from the API (clusters, services,
// details of events) cannot inject markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

// h builds an HTML element: h('td', {class: 'num'}, '12').
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

// svg builds an SVG element the same way.
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

// replaceChildrenKeepingFocus swaps the children of container for the new
// ones and, if the focus was on an element with a data-key inside it, puts
// the focus back on the new element with the same key: live updates redraw
// a view without taking the keyboard user's place away.
export function replaceChildrenKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) && active.dataset ? active.dataset.key : undefined;
  container.replaceChildren();
  append(container, children);
  if (key !== undefined) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({preventScroll: true});
  }
}

// table builds a table with a caption, column headers and rows of cells; a
// cell is a node, a string, or {value, class, header} (header: a row header).
// The wrapper scrolls sideways on narrow screens and can take the focus, so
// keyboard users can scroll it too.
export function table(key, caption, columns, rows, {empty = 'None.', nowrap = false} = {}) {
  if (rows.length === 0) {
    return h('div', {class: 'table-empty'}, h('h3', {id: `cap-${key}`}, caption), h('p', {class: 'muted'}, empty));
  }
  // Explicit roles: on a narrow screen the CSS lays rows out as blocks,
  // which would otherwise drop the table's semantics in some browsers.
  const head = h('tr', {role: 'row'}, columns.map((c) => h('th', {scope: 'col', role: 'columnheader', class: c.class}, c.label)));
  const body = rows.map((r) => h('tr', {role: 'row', ...(r.attrs || {})}, r.cells.map((cell, i) => {
    const col = columns[i] || {};
    const v = cell && typeof cell === 'object' && !(cell instanceof Node) && !Array.isArray(cell) ? cell : {value: cell};
    return i === 0 ?
      h('th', {scope: 'row', role: 'rowheader', class: [col.class, v.class]}, v.value) :
      h('td', {role: 'cell', class: [col.class, v.class], 'data-label': col.label}, v.value);
  })));
  const id = `cap-${key}`;
  return h('div', {class: 'table-wrap', role: 'region', 'aria-labelledby': id, tabindex: '0', 'data-key': `table-${key}`},
    h('table', {role: 'table', class: nowrap ? 'nowrap' : null}, h('caption', {id}, caption), h('thead', {role: 'rowgroup'}, head), h('tbody', {role: 'rowgroup'}, body)));
}

// Health of a link or a cluster: the colour is never the only cue, each has
// an icon shape and a word (see docs/ui.md, Accessibility).
export const HEALTH = {
  ok: {icon: '●', word: 'ok'},
  degraded: {icon: '▲', word: 'degraded'},
  down: {icon: '✕', word: 'down'},
  idle: {icon: '○', word: 'idle'},
};

// badge is a health word with its icon, coloured by health.
export function badge(health, text) {
  const hh = HEALTH[health] || HEALTH.idle;
  return h('span', {class: ['badge', `h-${health}`]}, h('span', {class: 'icon', 'aria-hidden': 'true'}, hh.icon), ' ', text || hh.word);
}

export function fmtRate(rps) {
  if (!Number.isFinite(rps) || rps <= 0) return '0 req/s';
  if (rps < 10) return `${rps.toFixed(1)} req/s`;
  return `${Math.round(rps).toLocaleString('en')} req/s`;
}

export function fmtErr(rate) {
  if (!Number.isFinite(rate) || rate <= 0) return '0% errors';
  if (rate < 0.001) return '<0.1% errors';
  return `${(rate * 100).toFixed(rate < 0.1 ? 1 : 0)}% errors`;
}

export function fmtMs(ms) {
  if (!Number.isFinite(ms) || ms <= 0) return '–';
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

// parseTime returns the Date of an RFC 3339 string, or null for "" and
// anything unparseable.
export function parseTime(s) {
  if (!s) return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

// fmtAge says how long ago t was: "4 s ago", "3 min ago", "2 h ago".
export function fmtAge(t, now = Date.now()) {
  const s = Math.max(0, Math.round((now - t.getTime()) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// fmtUntil says how far t is: "in 89 days", "in 5 h", "expired 2 d ago".
export function fmtUntil(t, now = Date.now()) {
  const s = Math.round((t.getTime() - now) / 1000);
  if (s < 0) return `expired ${fmtAge(t, now)}`;
  if (s < 90 * 60) return `in ${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} days`;
}

// timeEl is a <time> of an RFC 3339 string: the local clock time, with the
// age kept current by the ticker in app.js (data-since).
export function timeEl(s, {age = false, key} = {}) {
  const t = parseTime(s);
  if (!t) return h('span', {class: 'muted'}, 'never');
  const clock = t.toLocaleTimeString('en-GB', {hour12: false});
  const attrs = {datetime: t.toISOString(), title: t.toISOString(), 'data-key': key};
  if (!age) return h('time', attrs, clock);
  return h('time', {...attrs, 'data-since': t.toISOString()}, fmtAge(t));
}

// byName compares strings for a stable, human order.
export function byName(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}
