// The hub view: the hub's servers, which one leads, how far each has
// applied the Raft log, the state revision, the open agent streams, and
// when each member cluster was last heard from.

import {h, table, badge, timeEl, parseTime, byName} from './dom.js';

export const title = 'Hub';
export const uses = ['hub'];

// A member not heard from for this long is flagged as stale.
const STALE_MS = 30 * 1000;

export function render(store) {
  const head = h('h1', {tabindex: '-1', 'data-key': 'h1'}, title);
  const doc = store.data.hub;
  if (!doc) return [head, h('p', {class: 'loading'}, 'Loading the hub…')];
  const servers = [...(doc.servers || [])].sort((a, b) => byName(a.id, b.id));
  const members = [...(doc.members || [])].sort((a, b) => byName(a.cluster, b.cluster));
  const leader = servers.find((s) => s.leader);
  return [
    head,
    h('dl', {class: 'facts'},
      h('div', {}, h('dt', {}, 'Leader'), h('dd', {'data-fact': 'leader'}, leader ? leader.id : badge('down', 'none'))),
      h('div', {}, h('dt', {}, 'Revision'), h('dd', {'data-fact': 'revision'}, String(doc.revision))),
      h('div', {}, h('dt', {}, 'Agent streams'), h('dd', {'data-fact': 'streams'}, String(doc.streams))),
      h('div', {}, h('dt', {}, 'Servers'), h('dd', {'data-fact': 'servers'}, String(servers.length)))),
    table('servers', 'Servers', [{label: 'Server'}, {label: 'Address'}, {label: 'Role'}, {label: 'Raft index', class: 'num'}, {label: 'State'}],
      servers.map((s) => ({attrs: {'data-server': s.id, 'data-leader': String(!!s.leader)}, cells: [
        s.id, h('code', {}, s.address), s.leader ? badge('ok', 'leader') : 'follower', {value: String(s.raftIndex), class: 'num'}, s.state,
      ]})), {empty: 'No server answers.', nowrap: true}),
    table('members', 'Members', [{label: 'Cluster'}, {label: 'Last contact'}, {label: 'State'}],
      members.map((m) => {
        const t = parseTime(m.lastContact);
        const stale = !t || Date.now() - t.getTime() > STALE_MS;
        return {attrs: {'data-member': m.cluster}, cells: [m.cluster, timeEl(m.lastContact, {age: true}), stale ? badge('degraded', 'not heard from recently') : badge('ok', 'in contact')]};
      }), {empty: 'No cluster has joined.'}),
  ];
}
