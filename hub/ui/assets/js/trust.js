// The trust view: each trust domain the federation knows, its bundle's
// sequence number, when its root expires, and a CA rotation in progress
// with which clusters already hold the new root.

import {h, table, badge, parseTime, fmtUntil, byName} from './dom.js';

export const title = 'Trust';
export const uses = ['trust'];

const DAY = 86400 * 1000;

function expiry(s) {
  const t = parseTime(s);
  if (!t) return h('span', {class: 'muted'}, 'unknown');
  const left = t.getTime() - Date.now();
  const health = left < 0 ? 'down' : left < 30 * DAY ? 'degraded' : 'ok';
  return h('span', {}, h('time', {datetime: t.toISOString()}, t.toISOString().slice(0, 10)), ' ', badge(health, fmtUntil(t)));
}

function rotation(r) {
  if (!r) return h('span', {class: 'muted'}, 'none');
  const acks = [...(r.acks || [])].sort((a, b) => byName(a.cluster, b.cluster));
  const held = acks.filter((a) => a.holds).length;
  return h('div', {class: 'rotation'},
    h('p', {}, badge('degraded', `${r.phase}`), ` ${held} of ${acks.length} clusters hold the new root`),
    h('ul', {class: 'inline acks'}, acks.map((a) => h('li', {'data-ack': a.cluster, 'data-holds': String(a.holds)},
      badge(a.holds ? 'ok' : 'idle', `${a.cluster}: ${a.holds ? 'holds' : 'waiting'}`)))));
}

export function render(store) {
  const head = h('h1', {tabindex: '-1', 'data-key': 'h1'}, title);
  const doc = store.data.trust;
  if (!doc) return [head, h('p', {class: 'loading'}, 'Loading the trust domains…')];
  const domains = [...(doc.domains || [])].sort((a, b) => byName(a.trustDomain, b.trustDomain));
  const rotating = domains.filter((d) => d.rotation).length;
  return [
    head,
    h('p', {class: 'summary'}, `${domains.length} trust domain${domains.length === 1 ? '' : 's'}, ${rotating ? `${rotating} rotating` : 'no rotation in progress'}.`),
    table('domains', 'Trust domains', [
      {label: 'Trust domain'}, {label: 'Cluster'}, {label: 'Bundle sequence', class: 'num'}, {label: 'Root expires'}, {label: 'Rotation'},
    ], domains.map((d) => ({attrs: {'data-domain': d.trustDomain}, cells: [
      d.trustDomain, d.cluster || h('span', {class: 'muted'}, 'external (federated)'), {value: String(d.bundleSequence), class: 'num'}, expiry(d.rootExpiry), rotation(d.rotation),
    ]})), {empty: 'No trust domain yet.'}),
  ];
}
