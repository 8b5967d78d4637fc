// The meshfed UI: a hash router over four read-only views, redrawn from a
// Store that follows the hub's event stream.

import {Store} from './api.js';
import {h, fmtAge, replaceChildrenKeepingFocus} from './dom.js';
import * as topology from './topology.js';
import * as services from './services.js';
import * as trust from './trust.js';
import * as hubview from './hubview.js';

const VIEWS = {topology, services, trust, hub: hubview};
const DEFAULT = 'topology';
// Timeline events worth saying aloud to screen-reader users as they come.
const ANNOUNCED = new Set(['failover', 'ejection', 'disconnect', 'removal']);

const main = document.getElementById('main');
const conn = document.getElementById('conn');
const announcer = document.getElementById('announce');
let current = null;
let drawn = false; // the topology was drawn once (the page-time mark)
let pending = false;

const store = new Store((kind, added) => {
  if (kind === 'connection') showConnection();
  if (kind === 'timeline' && added && store.connection === 'live') {
    const said = added.filter((e) => ANNOUNCED.has(e.kind)).map((e) => `${e.kind}${e.cluster ? ` in ${e.cluster}` : ''}: ${e.detail || ''}`);
    if (said.length) announcer.textContent = said.join('. ');
  }
  if (kind === 'topology' && !drawn && current === 'topology') draw(); // the first drawing: no frame's wait
  else if (kind === 'connection' || (current && VIEWS[current].uses.includes(kind))) schedule();
});

function viewName() {
  const name = location.hash.replace(/^#\/?/, '');
  return VIEWS[name] ? name : DEFAULT;
}

// schedule redraws the current view once per frame at most, however many
// documents arrive.
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    draw();
  });
}

function signedOut() {
  return [
    h('h1', {tabindex: '-1', 'data-key': 'h1'}, 'Signed out'),
    h('p', {}, 'Your session with the hub has ended, or was never started. The UI needs the admin credential.'),
    h('p', {}, 'Run ', h('code', {}, 'meshfed ui login'), ' and open the URL it prints.'),
  ];
}

function draw() {
  const view = VIEWS[current];
  const nodes = store.connection === 'unauthorized' ? signedOut() : view.render(store, {width: main.clientWidth, rerender: schedule});
  replaceChildrenKeepingFocus(main, nodes);
  if (!drawn && current === 'topology' && store.data.topology && store.connection !== 'unauthorized') {
    drawn = true;
    performance.mark('meshfed:topology-drawn');
  }
}

function showConnection() {
  const words = {
    connecting: 'Connecting…',
    live: 'Live',
    reconnecting: 'Reconnecting… (showing the last data received)',
    unauthorized: 'Signed out',
  };
  conn.dataset.state = store.connection;
  conn.querySelector('.conn-text').textContent = words[store.connection] || store.connection;
}

function route() {
  const name = viewName();
  const changed = current !== null && current !== name;
  current = name;
  for (const a of document.querySelectorAll('nav a[data-view]')) {
    if (a.dataset.view === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `${VIEWS[name].title} · meshfed`;
  draw();
  // After a change of view, the keyboard and screen reader go to its
  // heading, as after loading a page.
  if (changed) {
    const h1 = main.querySelector('h1');
    if (h1) h1.focus();
  }
}

// Ages ("4 s ago") tick without a redraw.
setInterval(() => {
  const now = Date.now();
  for (const el of document.querySelectorAll('time[data-since]')) {
    el.textContent = fmtAge(new Date(el.dataset.since), now);
  }
}, 1000);

let resizeTimer = null;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(schedule, 150);
});
window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#/') || location.hash === '') route();
});
document.getElementById('skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

route();
store.start();
