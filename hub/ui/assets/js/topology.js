// The topology view: clusters grouped by region and zone, their gateways,
// the links between them with live traffic figures, and the timeline.
//
// The drawing is an SVG image for the eye; the same facts are in the
// tables below it, which is what screen readers and narrow screens use.

import {h, svg, table, badge, HEALTH, fmtRate, fmtErr, fmtMs, timeEl, byName} from './dom.js';

export const title = 'Topology';
export const uses = ['topology', 'timeline'];

// clusterStatus says how a cluster is doing: status is a stable key (the
// tests and the CSS use it), label the words shown, health its colour.
export function clusterStatus(c) {
  const gws = c.gateways || [];
  const up = gws.filter((g) => g.up).length;
  if (c.removed) return {status: 'removed', label: 'removed', health: 'down'};
  if (!c.connected) return {status: 'disconnected', label: 'disconnected', health: 'down'};
  if (gws.length > 0 && up === 0) return {status: 'gateway-down', label: gws.length === 1 ? 'gateway down' : 'all gateways down', health: 'down'};
  if (up < gws.length) return {status: 'degraded', label: `${up} of ${gws.length} gateways up`, health: 'degraded'};
  // No gateway reported: nothing reaches the cluster's exports and its
  // calls cannot leave it, so it is down for the federation.
  if (gws.length === 0) return {status: 'no-gateway', label: 'no gateway', health: 'down'};
  return {status: 'ok', label: 'connected', health: 'ok'};
}

const NODE_W = 176;
const NODE_H = 86;
const GAP = 16;
const ZONE_PAD = 10;
const ZONE_HEAD = 22;
const REGION_PAD = 10;
const REGION_HEAD = 26;
const REGION_GAP = 28;
const MARGIN = 4;
const MAX_SPREAD = 240;
// Below this width the drawing leaves out the links' labels (the table of
// links has the figures): they would cover the clusters.
const LABELS_MIN_WIDTH = 600;

// layout places clusters, grouped by region then zone (each sorted by
// name), in boxes that flow left to right and wrap within width.
export function layout(clusters, width) {
  const regions = new Map();
  for (const c of clusters) {
    const r = c.region || '(no region)';
    const z = c.zone || '(no zone)';
    if (!regions.has(r)) regions.set(r, new Map());
    const zones = regions.get(r);
    if (!zones.has(z)) zones.set(z, []);
    zones.get(z).push(c);
  }
  const inner = Math.max(width - 2 * MARGIN - 2 * REGION_PAD - 2 * ZONE_PAD, NODE_W);
  const maxCols = Math.max(1, Math.min(4, Math.floor((inner + GAP) / (NODE_W + GAP))));
  const boxes = [];
  for (const r of [...regions.keys()].sort(byName)) {
    const zones = [];
    let zy = REGION_HEAD;
    let zw = 0;
    for (const z of [...regions.get(r).keys()].sort(byName)) {
      const cs = regions.get(r).get(z).sort((a, b) => byName(a.name, b.name));
      const cols = Math.min(cs.length, maxCols);
      const rows = Math.ceil(cs.length / cols);
      const w = 2 * ZONE_PAD + cols * NODE_W + (cols - 1) * GAP;
      const hh = ZONE_HEAD + ZONE_PAD + rows * NODE_H + (rows - 1) * GAP;
      zones.push({name: z, y: zy, w, h: hh, nodes: cs.map((c, i) => ({c, x: ZONE_PAD + (i % cols) * (NODE_W + GAP), y: ZONE_HEAD + Math.floor(i / cols) * (NODE_H + GAP)}))});
      zy += hh + GAP;
      zw = Math.max(zw, w);
    }
    boxes.push({name: r, w: zw + 2 * REGION_PAD, h: zy - GAP + REGION_PAD, zones});
  }
  // Flow the region boxes into rows. When they all fit in one row, spread
  // them out (up to MAX_SPREAD apart) to leave room for the links' labels.
  const total = boxes.reduce((n, b) => n + b.w, 0);
  const oneRow = boxes.length > 1 && total + (boxes.length - 1) * REGION_GAP <= width - 2 * MARGIN;
  const gap = oneRow ? Math.min(MAX_SPREAD, (width - 2 * MARGIN - total) / (boxes.length - 1)) : REGION_GAP;
  let x = MARGIN;
  let y = MARGIN;
  let rowH = 0;
  let maxX = 0;
  for (const b of boxes) {
    if (x > MARGIN && x + b.w > width - MARGIN) {
      x = MARGIN;
      y += rowH + REGION_GAP;
      rowH = 0;
    }
    b.x = x;
    b.y = y;
    x += b.w + gap;
    rowH = Math.max(rowH, b.h);
    maxX = Math.max(maxX, b.x + b.w);
  }
  const pos = new Map();
  for (const b of boxes) {
    for (const z of b.zones) {
      z.x = b.x + REGION_PAD;
      z.y += b.y;
      for (const n of z.nodes) {
        n.x += z.x;
        n.y += z.y;
        pos.set(n.c.name, n);
      }
    }
  }
  return {boxes, pos, width: Math.max(maxX + MARGIN, 200), height: y + rowH + MARGIN};
}

// edgePoint is where the ray from p towards the centre of node n enters
// the node's box.
function edgePoint(p, n, margin) {
  const cx = n.x + NODE_W / 2;
  const cy = n.y + NODE_H / 2;
  const dx = cx - p.x;
  const dy = cy - p.y;
  const s = Math.min(Math.abs(dx) > 0 ? (NODE_W / 2 + margin) / Math.abs(dx) : Infinity, Math.abs(dy) > 0 ? (NODE_H / 2 + margin) / Math.abs(dy) : Infinity);
  return {x: cx - dx * s, y: cy - dy * s};
}

function linkPath(a, b, bend) {
  const ax = a.x + NODE_W / 2;
  const ay = a.y + NODE_H / 2;
  const bx = b.x + NODE_W / 2;
  const by = b.y + NODE_H / 2;
  const dx = bx - ax;
  const dy = by - ay;
  const len = Math.hypot(dx, dy) || 1;
  // Bend each direction to its own side, more for longer links so they
  // arc past the clusters in between.
  const off = bend * Math.max(24, 0.22 * len);
  const c = {x: (ax + bx) / 2 - (dy / len) * off, y: (ay + by) / 2 + (dx / len) * off};
  const p0 = edgePoint(c, a, 2);
  const p2 = edgePoint(c, b, 6);
  const mid = {x: 0.25 * p0.x + 0.5 * c.x + 0.25 * p2.x, y: 0.25 * p0.y + 0.5 * c.y + 0.25 * p2.y};
  return {d: `M${p0.x.toFixed(1)},${p0.y.toFixed(1)} Q${c.x.toFixed(1)},${c.y.toFixed(1)} ${p2.x.toFixed(1)},${p2.y.toFixed(1)}`, mid};
}

function linkHealth(l) {
  return HEALTH[l.health] ? l.health : 'idle';
}

function linkText(l) {
  return `${fmtRate(l.rps)}, ${fmtErr(l.errorRate)}, p99 ${fmtMs(l.p99Ms)}`;
}

function shortFigures(l) {
  if (linkHealth(l) === 'idle' && !(l.rps > 0)) return 'idle';
  return `${fmtRate(l.rps).replace(' req/s', '/s')} · ${fmtErr(l.errorRate).replace(' errors', '')} · ${fmtMs(l.p99Ms)}`;
}

function drawing(topo, width) {
  const clusters = topo.clusters || [];
  const L = layout(clusters, width);
  const defs = svg('defs', {}, Object.keys(HEALTH).map((k) => svg('marker', {
    id: `arrow-${k}`, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse', class: `arrow h-${k}`,
  }, svg('path', {d: 'M0,0 L10,5 L0,10 Z'}))));
  const regions = L.boxes.map((b) => svg('g', {class: 'region', 'data-region': b.name},
    svg('rect', {x: b.x, y: b.y, width: b.w, height: b.h, rx: 10, class: 'region-box'}),
    svg('text', {x: b.x + REGION_PAD, y: b.y + 18, class: 'region-name'}, b.name),
    b.zones.map((z) => svg('g', {class: 'zone', 'data-zone': z.name},
      svg('rect', {x: z.x, y: z.y, width: z.w, height: z.h, rx: 8, class: 'zone-box'}),
      svg('text', {x: z.x + ZONE_PAD, y: z.y + 16, class: 'zone-name'}, z.name)))));

  const links = topo.links || [];
  const keys = new Set(links.map((l) => `${l.from}>${l.to}`));
  const linkEls = [];
  const labels = [];
  let top = 0;
  let bottom = L.height;
  for (const l of links) {
    const a = L.pos.get(l.from);
    const b = L.pos.get(l.to);
    if (!a || !b || a === b) continue;
    const hl = linkHealth(l);
    const paired = keys.has(`${l.to}>${l.from}`);
    const p = linkPath(a, b, paired ? 1 : 0.6);
    const w = Math.min(6, 1.5 + Math.log10(1 + (l.rps > 0 ? l.rps : 0)));
    linkEls.push(svg('path', {d: p.d, class: ['link', `h-${hl}`], 'stroke-width': w.toFixed(1), 'marker-end': `url(#arrow-${hl})`, 'data-from': l.from, 'data-to': l.to, 'data-health': hl},
      svg('title', {}, `${l.from} → ${l.to}: ${HEALTH[hl].word}, ${linkText(l)}`)));
    top = Math.min(top, p.mid.y - 16);
    bottom = Math.max(bottom, p.mid.y + 12);
    if (width < LABELS_MIN_WIDTH) continue;
    const txt = `${HEALTH[hl].icon} ${shortFigures(l)}`;
    // A plate under the label (its width estimated from the characters:
    // the text is not laid out yet) keeps the line from showing through.
    const w2 = (txt.length * 6.6) / 2 + 4;
    labels.push(svg('g', {class: ['link-label', `h-${hl}`]},
      svg('rect', {x: (p.mid.x - w2).toFixed(1), y: (p.mid.y - 8).toFixed(1), width: (2 * w2).toFixed(1), height: 16, rx: 3, class: 'label-plate'}),
      svg('text', {x: p.mid.x.toFixed(1), y: (p.mid.y + 4).toFixed(1), 'text-anchor': 'middle'}, txt)));
  }

  const nodes = clusters.filter((c) => L.pos.has(c.name)).map((c) => {
    const n = L.pos.get(c.name);
    const st = clusterStatus(c);
    const gws = c.gateways || [];
    const gwEls = gws.slice(0, 6).map((g, i) => svg('g', {class: ['gw', g.up ? 'gw-up' : 'gw-down'], transform: `translate(${NODE_W - 22 - i * 22},${NODE_H - 22})`, 'data-gateway': g.instance},
      svg('title', {}, `gateway ${g.instance}: ${g.up ? 'up' : 'down'}`),
      svg('rect', {width: 16, height: 16, rx: 3}),
      svg('text', {x: 8, y: 12, 'text-anchor': 'middle'}, g.up ? '✓' : '✕')));
    return svg('g', {class: ['cluster', `h-${st.health}`, `s-${st.status}`], transform: `translate(${n.x},${n.y})`, 'data-cluster': c.name, 'data-health': st.health, 'data-status': st.status},
      svg('title', {}, `${c.name} (${c.region} / ${c.zone}): ${st.label}`),
      svg('rect', {width: NODE_W, height: NODE_H, rx: 8, class: 'node-box'}),
      svg('text', {x: 12, y: 23, class: 'node-name'}, c.name),
      svg('text', {x: 12, y: 42, class: 'node-sub'}, `${c.exports || 0} export${c.exports === 1 ? '' : 's'} · ${gws.length} gateway${gws.length === 1 ? '' : 's'}`),
      svg('text', {x: 12, y: 66, class: ['node-status', `h-${st.health}`]}, `${HEALTH[st.health].icon} ${st.label}`),
      gwEls);
  });

  const down = clusters.filter((c) => clusterStatus(c).health === 'down').map((c) => `${c.name} ${clusterStatus(c).label}`);
  const desc = `${clusters.length} clusters in ${L.boxes.length} regions, ${links.length} links.` + (down.length ? ` Not serving: ${down.join(', ')}.` : ' All clusters connected.') + ' The tables below list the same facts.';
  return h('figure', {class: 'topo-figure'},
    svg('svg', {class: 'topo', role: 'img', 'aria-labelledby': 'topo-title topo-desc', viewBox: `0 ${top.toFixed(0)} ${L.width} ${(bottom - top).toFixed(0)}`, width: L.width, height: (bottom - top).toFixed(0), preserveAspectRatio: 'xMidYMin meet'},
      svg('title', {id: 'topo-title'}, 'Federation topology'),
      svg('desc', {id: 'topo-desc'}, desc),
      defs, regions, svg('g', {class: 'links'}, linkEls), svg('g', {class: 'clusters'}, nodes), svg('g', {class: 'labels'}, labels)),
    h('figcaption', {class: 'legend'},
      h('span', {class: 'legend-title'}, 'Legend:'),
      badge('ok', 'ok / connected'), badge('degraded', 'degraded'), badge('down', 'down / disconnected'), badge('idle', 'idle'),
      h('span', {class: 'legend-note'}, 'Link labels: requests per second · error rate · p99 latency. Arrows point from caller to callee.')));
}

const KIND_ICON = {failover: '⇄', ejection: '⏏', join: '+', removal: '−', rotation: '↻', disconnect: '✕', connect: '✓'};
const KIND_HEALTH = {failover: 'degraded', ejection: 'degraded', join: 'ok', removal: 'down', rotation: 'idle', disconnect: 'down', connect: 'ok'};

export function timeline(events) {
  const items = events.map((e) => h('li', {class: ['event', `k-${e.kind}`], 'data-kind': e.kind, 'data-cluster': e.cluster},
    timeEl(e.time),
    h('span', {class: ['kind', `h-${KIND_HEALTH[e.kind] || 'idle'}`]}, h('span', {class: 'icon', 'aria-hidden': 'true'}, KIND_ICON[e.kind] || '•'), ' ', e.kind),
    e.cluster ? h('strong', {class: 'event-cluster'}, e.cluster) : null,
    h('span', {class: 'event-detail'}, e.detail || '')));
  return h('section', {class: 'timeline', 'aria-labelledby': 'timeline-h'},
    h('h2', {id: 'timeline-h'}, 'Timeline'),
    events.length === 0 ? h('p', {class: 'muted'}, 'No events yet.') :
      h('ol', {class: 'events', tabindex: '0', 'aria-labelledby': 'timeline-h', 'data-key': 'timeline'}, items));
}

export function render(store, {width}) {
  const topo = store.data.topology;
  const head = h('h1', {tabindex: '-1', 'data-key': 'h1'}, title);
  if (!topo) return [head, h('p', {class: 'loading'}, 'Loading the topology…'), timeline(store.timeline)];
  const clusters = topo.clusters || [];
  const links = topo.links || [];
  const connected = clusters.filter((c) => c.connected && !c.removed).length;
  const summary = h('p', {class: 'summary'},
    `${clusters.length} cluster${clusters.length === 1 ? '' : 's'}, ${connected} connected, ${links.length} link${links.length === 1 ? '' : 's'}. As of `, timeEl(topo.generatedAt), '.');

  const clusterRows = [...clusters].sort((a, b) => byName(a.name, b.name)).map((c) => {
    const st = clusterStatus(c);
    const gws = c.gateways || [];
    return {attrs: {'data-cluster': c.name, 'data-health': st.health}, cells: [
      c.name, c.region, c.zone, badge(st.health, st.label),
      gws.length ? gws.map((g, i) => [i ? ', ' : '', h('span', {class: g.up ? 'gw-word up' : 'gw-word down'}, `${g.instance} ${g.up ? 'up' : 'down'}`)]) : h('span', {class: 'muted'}, 'none'),
      {value: String(c.exports || 0), class: 'num'},
      timeEl(c.lastContact, {age: true}),
    ]};
  });
  const linkRows = [...links].sort((a, b) => byName(a.from + '>' + a.to, b.from + '>' + b.to)).map((l) => ({
    attrs: {'data-from': l.from, 'data-to': l.to, 'data-health': linkHealth(l)},
    cells: [`${l.from} → ${l.to}`, badge(linkHealth(l)), {value: fmtRate(l.rps), class: 'num'}, {value: fmtErr(l.errorRate), class: 'num'}, {value: fmtMs(l.p99Ms), class: 'num'}],
  }));
  return [
    head, summary,
    drawing(topo, width),
    h('div', {class: 'columns'},
      h('div', {class: 'col'}, table('clusters', 'Clusters', [
        {label: 'Cluster'}, {label: 'Region'}, {label: 'Zone'}, {label: 'Status'}, {label: 'Gateways'}, {label: 'Exports', class: 'num'}, {label: 'Last contact'},
      ], clusterRows, {empty: 'No cluster has joined.', nowrap: true})),
      timeline(store.timeline)),
    h('div', {}, table('links', 'Links', [
      {label: 'Link (caller → callee)'}, {label: 'Health'}, {label: 'Requests', class: 'num'}, {label: 'Errors', class: 'num'}, {label: 'p99', class: 'num'},
    ], linkRows, {empty: 'No traffic between clusters yet.', nowrap: true})),
  ];
}
