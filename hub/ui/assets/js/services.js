// The services view: each global service, who exports it with how many
// ready endpoints in each zone, who imports it, conflicts, and the traffic
// policy in force with the revision each cluster's gateways enforce.

import {h, table, badge, byName} from './dom.js';

export const title = 'Services';
export const uses = ['services'];

let filterInput = null; // kept across redraws: typing survives live updates
let filter = '';

function filterBox(rerender) {
  if (!filterInput) {
    filterInput = h('input', {type: 'search', id: 'svc-filter', 'data-key': 'svc-filter', autocomplete: 'off', spellcheck: 'false', placeholder: 'namespace/name'});
    filterInput.addEventListener('input', () => {
      filter = filterInput.value.trim().toLowerCase();
      rerender();
    });
  }
  return h('p', {class: 'filter'}, h('label', {for: 'svc-filter'}, 'Filter services'), ' ', filterInput);
}

function zoneList(readyByZone) {
  const zones = Object.keys(readyByZone || {}).sort(byName);
  if (zones.length === 0) return h('span', {class: 'muted'}, 'no ready endpoints');
  return h('ul', {class: 'inline'}, zones.map((z) => {
    const n = readyByZone[z];
    return h('li', {class: n > 0 ? '' : 'zero'}, `${z}: `, h('strong', {}, String(n)));
  }));
}

function policyBlock(s, id) {
  const p = s.policy;
  if (!p) return h('p', {class: 'policy muted'}, 'Policy: none (the default: every ready endpoint, nearest first).');
  const enf = [...(p.enforcement || [])].sort((a, b) => byName(a.cluster + a.gateway, b.cluster + b.gateway));
  const behind = enf.filter((e) => !e.current).length;
  return h('div', {class: 'policy'},
    h('p', {}, 'Policy ', h('strong', {}, p.name), ` at revision ${p.revision}: `,
      enf.length === 0 ? h('span', {class: 'muted'}, 'no gateway reports enforcing it yet.') :
        behind === 0 ? badge('ok', `enforced by all ${enf.length} gateways`) : badge('degraded', `${behind} of ${enf.length} gateways behind`)),
    enf.length ? table(`enf-${id}`, `Enforcement of ${p.name}`, [{label: 'Cluster'}, {label: 'Gateway'}, {label: 'Revision', class: 'num'}, {label: 'State'}],
      enf.map((e) => ({attrs: {'data-cluster': e.cluster}, cells: [e.cluster, e.gateway, {value: String(e.revision), class: 'num'},
        e.current ? badge('ok', 'current') : badge('degraded', `behind (${e.revision} < ${p.revision})`)]}))) : null);
}

function service(s, i) {
  const id = `svc${i}`;
  const exporters = [...(s.exporters || [])].sort((a, b) => byName(a.cluster, b.cluster));
  const importers = [...(s.importers || [])].sort(byName);
  const conflicts = exporters.filter((e) => e.conflict);
  const ready = exporters.reduce((n, e) => n + Object.values(e.readyByZone || {}).reduce((m, v) => m + v, 0), 0);
  const health = exporters.length === 0 || ready === 0 ? 'down' : conflicts.length ? 'degraded' : 'ok';
  return h('article', {class: 'service', 'data-service': s.service, 'aria-labelledby': `${id}-h`},
    h('h2', {id: `${id}-h`}, s.service, ' ', badge(health, health === 'down' ? 'no ready endpoint' : health === 'degraded' ? `${conflicts.length} conflict${conflicts.length === 1 ? '' : 's'}` : `${ready} ready`)),
    table(`exp-${id}`, `Exporters of ${s.service}`, [{label: 'Cluster'}, {label: 'Ready endpoints by zone'}, {label: 'Conflict'}],
      exporters.map((e) => ({attrs: {'data-exporter': e.cluster}, cells: [e.cluster, zoneList(e.readyByZone), e.conflict ? badge('degraded', e.conflict) : h('span', {class: 'muted'}, 'none')]})),
      {empty: 'No cluster exports it.'}),
    h('p', {class: 'importers'}, h('span', {class: 'label'}, 'Imported by: '),
      importers.length ? h('ul', {class: 'inline'}, importers.map((c) => h('li', {'data-importer': c}, c))) : h('span', {class: 'muted'}, 'no cluster')),
    policyBlock(s, id));
}

export function render(store, {rerender}) {
  const head = h('h1', {tabindex: '-1', 'data-key': 'h1'}, title);
  const doc = store.data.services;
  if (!doc) return [head, h('p', {class: 'loading'}, 'Loading the services…')];
  const all = [...(doc.services || [])].sort((a, b) => byName(a.service, b.service));
  const shown = filter ? all.filter((s) => s.service.toLowerCase().includes(filter)) : all;
  return [
    head,
    h('p', {class: 'summary'}, `${all.length} global service${all.length === 1 ? '' : 's'}` + (filter ? `, ${shown.length} shown.` : '.')),
    all.length > 0 ? filterBox(rerender) : null,
    all.length === 0 ? h('p', {class: 'muted'}, 'No service is exported yet.') : null,
    h('div', {class: 'cards'}, shown.map(service)),
  ];
}
