// The browser checks of the meshfed UI, run by package uitest (uitest.go):
// Playwright (playwright-core) drives Debian's chromium, axe-core checks
// accessibility. Usage: node browser.mjs config.json
//
// Protocol with the Go side, one JSON object per line:
//   stdout {"log": "..."}                   a line for t.Log
//   stdout {"fail": "..."}                  a failed check (the run goes on where it can)
//   stdout {"step": "fail"}                 asks Go to act (fail, heal, expire); Go answers
//   stdin  {"ok": true} | {"error": "..."}  on stdin when done
//   stdout {"result": {...}}                figures at the end
// The exit code is 0 only if no check failed.

import {readFileSync} from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import readline from 'node:readline';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(path.join(cfg.modules, 'meshfed-ui-tools.js'));
const {chromium} = require('playwright-core');
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const log = (msg) => out({log: msg});
let failures = 0;
const fail = (msg) => {
  failures++;
  out({fail: msg});
};
const result = {pageTimeMs: [], screenshots: [], axe: {}, timings: {}};

const stdin = readline.createInterface({input: process.stdin});
const answers = [];
const waiters = [];
stdin.on('line', (line) => {
  const w = waiters.shift();
  if (w) w(JSON.parse(line));
  else answers.push(JSON.parse(line));
});
async function step(name) {
  out({step: name});
  const a = answers.length ? answers.shift() : await new Promise((r) => waiters.push(r));
  if (a.error) throw new Error(`step ${name}: ${a.error}`);
}

const ui = new URL('/ui/', cfg.baseURL).href;

// Set once the test ends the session: from then on the hub's 401s are
// expected, and chromium logs each as a console error.
let sessionEnded = false;

// watch fails the run on any script error, console error or CSP violation
// in the page.
function watch(page, name) {
  page.on('pageerror', (err) => fail(`${name}: uncaught error in the page: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'warning') log(`${name}: console warning: ${m.text()}`);
    if (m.type() !== 'error') return;
    if (sessionEnded && m.text().includes('status of 401')) return;
    fail(`${name}: console error: ${m.text()}`);
  });
  return page;
}

async function axeCheck(page, name) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    // Evaluated through the DevTools protocol, which the page's CSP does
    // not govern: the UI's policy stays in force for everything else.
    await page.evaluate(axeSource);
  }
  const r = await page.evaluate(() => window.axe.run(document, {resultTypes: ['violations']}));
  const counts = {};
  for (const v of r.violations) {
    counts[v.impact] = (counts[v.impact] || 0) + 1;
    const where = v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join('; ');
    if (v.impact === 'serious' || v.impact === 'critical') fail(`axe on ${name}: ${v.impact} ${v.id}: ${v.help} at ${where}`);
    else log(`axe on ${name}: ${v.impact} ${v.id}: ${v.help} at ${where}`);
  }
  result.axe[name] = counts;
}

async function shot(page, name) {
  const file = path.join(cfg.outDir, `${name}.png`);
  await page.screenshot({path: file, fullPage: true});
  result.screenshots.push(file);
}

async function topologyDrawnMs(page) {
  await page.waitForFunction(() => performance.getEntriesByName('meshfed:topology-drawn').length > 0, null, {timeout: 15000});
  return page.evaluate(() => performance.getEntriesByName('meshfed:topology-drawn')[0].startTime);
}

// clusterHealth reads the health the drawing gives each cluster.
function clusterHealth(page) {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll('svg.topo g.cluster')].map((g) => [g.dataset.cluster, g.dataset.health])));
}

async function waitHealth(page, cluster, healths, timeout) {
  const t0 = Date.now();
  await page.waitForFunction(([c, hs]) => {
    const g = document.querySelector(`svg.topo g.cluster[data-cluster="${c}"]`);
    return g && hs.includes(g.dataset.health);
  }, [cluster, healths], {timeout, polling: 50});
  return Date.now() - t0;
}

async function gotoView(page, view) {
  await page.evaluate((v) => {
    location.hash = `#/${v}`;
  }, view);
  await page.waitForFunction((v) => document.querySelector(`nav a[data-view="${v}"]`).getAttribute('aria-current') === 'page', view);
}

async function waitViewContent(page, view, timeout = 15000) {
  const sel = {
    topology: 'svg.topo g.cluster',
    services: 'article.service',
    trust: 'tr[data-domain]',
    hub: 'tr[data-server]',
  }[view];
  await page.waitForSelector(sel, {timeout});
}

async function unauthenticated(browser) {
  const ctx = await browser.newContext();
  try {
    for (const p of ['api/topology', 'api/events', 'api/services']) {
      const r = await ctx.request.get(new URL(p, ui).href, {maxRedirects: 0});
      if (r.status() !== 401) fail(`unauthenticated GET /ui/${p}: ${r.status()}, want 401`);
      else {
        const body = await r.json().catch(() => null);
        if (!body || typeof body.error !== 'string' || body.error === '') fail(`unauthenticated GET /ui/${p}: the 401 has no JSON {"error": ...}`);
      }
    }
    const page = await ctx.newPage();
    const r = await page.goto(ui);
    if (r.status() !== 401) fail(`unauthenticated page /ui/: ${r.status()}, want 401`);
    const text = await page.textContent('body');
    if (!text.includes('meshfed ui login')) fail(`unauthenticated page /ui/ does not say how to log in: ${text.slice(0, 200)}`);
    log(`unauthenticated: API and page refused with 401`);
  } finally {
    await ctx.close();
  }
}

async function keyboard(page) {
  // From the top of the page: the skip link first, then the views.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => {
    const el = document.activeElement;
    const cs = getComputedStyle(el);
    const r = el.getBoundingClientRect();
    return {id: el.id, outline: cs.outlineStyle, width: cs.outlineWidth, visible: r.top >= 0 && r.bottom <= innerHeight && r.width > 0};
  });
  if (first.id !== 'skip') fail(`first Tab stop is #${first.id}, want the skip link`);
  if (first.outline === 'none' || first.width === '0px' || !first.visible) fail(`the focused skip link shows no focus ring or is off screen: ${JSON.stringify(first)}`);
  for (let i = 0; i < 6; i++) {
    const v = await page.evaluate(() => document.activeElement.dataset.view);
    if (v === 'services') break;
    await page.keyboard.press('Tab');
  }
  const ring = await page.evaluate(() => ({view: document.activeElement.dataset.view, outline: getComputedStyle(document.activeElement).outlineStyle}));
  if (ring.view !== 'services') fail(`Tab never reached the Services link (at ${JSON.stringify(ring)})`);
  if (ring.outline === 'none') fail('the focused Services link shows no focus ring');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.activeElement && document.activeElement.tagName === 'H1' && document.activeElement.textContent === 'Services', null, {timeout: 5000})
    .catch(() => fail('Enter on the Services link did not move the focus to the Services heading'));
}

async function full(browser) {
  await unauthenticated(browser);

  const ctx = await browser.newContext({viewport: {width: 1280, height: 800}});
  const page = watch(await ctx.newPage(), 'desktop');
  const resp = await page.goto(cfg.loginURL);
  if (new URL(page.url()).pathname !== '/ui/') fail(`login ended at ${page.url()}, want /ui/`);
  if (resp && resp.headers()['content-security-policy'] === undefined) fail('/ui/ has no Content-Security-Policy');
  await waitViewContent(page, 'topology');
  const ms = await topologyDrawnMs(page);
  result.pageTimeMs.push(ms);
  log(`topology drawn ${ms.toFixed(0)} ms after navigation (login redirect included)`);

  await page.waitForFunction((n) => document.querySelectorAll('svg.topo g.cluster').length === n, cfg.expect.clusters.length, {timeout: 15000})
    .catch(() => {});
  const health = await clusterHealth(page);
  const names = Object.keys(health).sort();
  if (JSON.stringify(names) !== JSON.stringify([...cfg.expect.clusters].sort())) fail(`topology shows clusters ${names}, want ${cfg.expect.clusters}`);
  await page.waitForSelector('#conn[data-state="live"]', {timeout: 10000}).catch(() => fail('the event stream never went live'));
  // A marker that a reload would lose: the updates below must come without one.
  await page.evaluate(() => {
    window.meshfedNoReload = true;
  });

  if (cfg.expect.traffic) {
    const t0 = Date.now();
    await page.waitForSelector('svg.topo path.link:not(.h-idle)', {timeout: cfg.trafficWithinMs}).then(() => {
      result.timings.trafficMs = Date.now() - t0;
      log(`a link carries traffic ${result.timings.trafficMs} ms after the topology was drawn`);
    }, () => fail(`no link between clusters carries traffic within ${cfg.trafficWithinMs} ms`));
  }

  const fc = cfg.expect.failCluster;
  if (cfg.steps.includes('fail')) {
    await waitHealth(page, fc, ['ok'], 60000).catch(() => fail(`${fc} is not ok before the fault: ${JSON.stringify(health)}`));
    await shot(page, 'topology');
    await axeCheck(page, 'topology');
    const failovers = await page.locator('li[data-kind="failover"]').count();
    await step('fail');
    const t0 = Date.now();
    const red = waitHealth(page, fc, ['down'], cfg.failWithinMs).then((ms) => {
      result.timings.downMs = ms;
    }, () => fail(`${fc} did not turn down (red) within ${cfg.failWithinMs} ms of the fault`));
    const timeline = page.waitForFunction((n) => document.querySelectorAll('li[data-kind="failover"]').length > n, failovers, {timeout: cfg.failWithinMs, polling: 50}).then(() => {
      result.timings.failoverOnTimelineMs = Date.now() - t0;
    }, () => fail(`no failover on the timeline within ${cfg.failWithinMs} ms of the fault`));
    await Promise.all([red, timeline]);
    const label = await page.locator(`svg.topo g.cluster[data-cluster="${fc}"] .node-status`).textContent().catch(() => '');
    log(`${fc} after the fault: "${label}" in ${result.timings.downMs} ms; failover on the timeline in ${result.timings.failoverOnTimelineMs} ms`);
    await shot(page, 'topology-failed');
    await step('heal');
    await waitHealth(page, fc, ['ok'], cfg.healWithinMs).then((ms) => {
      result.timings.healedMs = ms;
      log(`${fc} back to ok ${ms} ms after heal`);
    }, () => fail(`${fc} did not come back (ok) within ${cfg.healWithinMs} ms of heal`));
    if (!(await page.evaluate(() => window.meshfedNoReload === true))) fail('the page reloaded during the live updates');
  } else {
    await shot(page, 'topology');
    await axeCheck(page, 'topology');
  }

  await keyboard(page);
  await waitViewContent(page, 'services');
  const svc = page.locator(`article.service[data-service="${cfg.expect.service}"]`);
  await svc.waitFor({timeout: 15000}).catch(() => fail(`the services view does not list ${cfg.expect.service}`));
  if (cfg.expect.exporters.length) {
    await page.waitForFunction(([s, want]) => {
      const a = document.querySelector(`article.service[data-service="${s}"]`);
      if (!a) return false;
      const got = [...a.querySelectorAll('[data-exporter]')].map((e) => e.dataset.exporter);
      return want.every((w) => got.includes(w));
    }, [cfg.expect.service, cfg.expect.exporters], {timeout: 15000}).catch(async () => {
      const got = await svc.locator('[data-exporter]').evaluateAll((es) => es.map((e) => e.dataset.exporter)).catch(() => []);
      fail(`${cfg.expect.service} has exporters ${got}, want ${cfg.expect.exporters}`);
    });
  }
  await shot(page, 'services');
  await axeCheck(page, 'services');

  for (const view of ['trust', 'hub']) {
    await gotoView(page, view);
    await waitViewContent(page, view).catch(() => fail(`the ${view} view shows no rows`));
    await shot(page, view);
    await axeCheck(page, view);
  }
  const servers = await page.locator('tr[data-server]').count();
  const leaders = await page.locator('tr[data-server][data-leader="true"]').count();
  if (servers !== cfg.expect.servers) fail(`the hub view lists ${servers} servers, want ${cfg.expect.servers}`);
  if (leaders !== 1) fail(`the hub view shows ${leaders} leaders, want 1`);

  // A phone: every view fits 375 px with no sideways scrolling of the page.
  const phone = await browser.newContext({viewport: {width: 375, height: 812}, storageState: await ctx.storageState(), isMobile: true, hasTouch: true});
  const pp = watch(await phone.newPage(), 'phone');
  for (const view of ['topology', 'services', 'trust', 'hub']) {
    await pp.goto(`${ui}#/${view}`);
    await waitViewContent(pp, view).catch(() => fail(`phone: the ${view} view shows nothing`));
    const w = await pp.evaluate(() => document.documentElement.scrollWidth);
    if (w > 375) fail(`phone: the ${view} view is ${w} px wide, wider than the 375 px screen`);
    await shot(pp, `phone-${view}`);
    await axeCheck(pp, `phone-${view}`);
  }
  await phone.close();

  if (cfg.steps.includes('expire')) {
    await gotoView(page, 'topology');
    sessionEnded = true;
    await step('expire');
    await page.waitForSelector('#conn[data-state="unauthorized"]', {timeout: 10000}).catch(() => fail('the page did not notice the session ended'));
    await page.waitForFunction(() => document.querySelector('main h1')?.textContent === 'Signed out', null, {timeout: 5000})
      .catch(() => fail('the page does not say it is signed out'));
    await shot(page, 'signed-out');
  }
  await ctx.close();
}

// pageTime loads /ui/ in a fresh context (cold cache, session cookie kept)
// cfg.loads times and reports when the topology was drawn.
async function pageTime(browser) {
  const login = await browser.newContext({viewport: {width: 1280, height: 800}});
  const lp = watch(await login.newPage(), 'login');
  await lp.goto(cfg.loginURL);
  await topologyDrawnMs(lp);
  const state = await login.storageState();
  await login.close();
  for (let i = 0; i < cfg.loads; i++) {
    const ctx = await browser.newContext({viewport: {width: 1280, height: 800}, storageState: state});
    const page = watch(await ctx.newPage(), 'page time');
    await page.goto(ui);
    result.pageTimeMs.push(await topologyDrawnMs(page));
    const parts = await page.evaluate(() => {
      const nav = performance.getEntriesByType('navigation')[0];
      const topo = performance.getEntriesByType('resource').find((r) => r.name.endsWith('/ui/api/topology'));
      const mods = performance.getEntriesByType('resource').filter((r) => r.name.endsWith('.js'));
      return {html: nav.responseEnd, domComplete: nav.domContentLoadedEventEnd, modules: Math.max(...mods.map((r) => r.responseEnd)), topology: topo ? topo.responseEnd : -1, topologyWait: topo ? topo.responseStart - topo.requestStart : -1};
    });
    log(`load ${i}: html ${parts.html.toFixed(0)} ms, modules ${parts.modules.toFixed(0)} ms, /ui/api/topology ${parts.topology.toFixed(0)} ms (server ${parts.topologyWait.toFixed(0)} ms), DOMContentLoaded ${parts.domComplete.toFixed(0)}, drawn ${result.pageTimeMs.at(-1).toFixed(0)} ms`);
    await ctx.close();
  }
}

const browser = await chromium.launch({executablePath: cfg.chromium, args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu']});
try {
  if (cfg.scenario === 'pagetime') await pageTime(browser);
  else await full(browser);
} catch (err) {
  fail(`aborted: ${err.stack || err}`);
} finally {
  await browser.close();
  out({result});
  stdin.close();
}
process.exit(failures ? 1 : 0);
