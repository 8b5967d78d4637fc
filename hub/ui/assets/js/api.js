// The client of the hub's UI API: the JSON endpoints under /ui/api/ and
// the event stream /ui/api/events (docs/ui.md lists them).
//
// A Store holds the latest document of each kind and the timeline, and
// tells its listener what changed. It reads each endpoint once at start
// (so the first view draws without waiting for the stream) and then
// follows the stream, which sends every document at connect and on each
// change: nothing is polled and the page never reloads.

export const KINDS = ['topology', 'services', 'trust', 'hub'];
const TIMELINE_MAX = 200;

// Unauthorized is thrown when the hub answers 401: the session ended.
export class Unauthorized extends Error {}

// getJSON fetches one endpoint of the API (a path below /ui/api/).
export async function getJSON(name, {signal} = {}) {
  const resp = await fetch(`api/${name}`, {headers: {Accept: 'application/json'}, credentials: 'same-origin', signal});
  if (resp.status === 401) throw new Unauthorized(`${name}: 401`);
  if (!resp.ok) throw new Error(`GET /ui/api/${name}: ${resp.status} ${resp.statusText}`);
  return resp.json();
}

function eventKey(e) {
  return `${e.time}|${e.kind}|${e.cluster}|${e.detail}`;
}

export class Store {
  // onChange(kind) is called after the document of kind changed ("topology",
  // "services", "trust", "hub", "timeline", or "connection").
  constructor(onChange) {
    this.onChange = onChange;
    this.data = {topology: null, services: null, trust: null, hub: null};
    this.fromStream = new Set(); // kinds the stream has sent: a slower fetch must not overwrite them
    this.timeline = [];
    this.seen = new Set();
    this.connection = 'connecting'; // live | reconnecting | unauthorized | connecting
    this.since = null; // when the stream last delivered anything
    this.retry = 1000;
  }

  start() {
    for (const kind of KINDS) this.fetchKind(kind);
    this.fetchTimeline();
    this.connect();
  }

  async fetchKind(kind) {
    try {
      const doc = await getJSON(kind);
      if (!this.fromStream.has(kind)) this.set(kind, doc, false);
    } catch (err) {
      this.failed(err);
    }
  }

  async fetchTimeline() {
    try {
      const doc = await getJSON('timeline');
      this.addEvents(doc.events || []);
    } catch (err) {
      this.failed(err);
    }
  }

  failed(err) {
    if (err instanceof Unauthorized) {
      this.setConnection('unauthorized');
      if (this.es) this.es.close();
      return;
    }
    console.warn('meshfed ui:', err.message);
  }

  set(kind, doc, fromStream) {
    if (fromStream) this.fromStream.add(kind);
    this.data[kind] = doc;
    this.onChange(kind);
  }

  // addEvents merges timeline events (any order) into the timeline, most
  // recent first, without duplicates, keeping at most TIMELINE_MAX.
  addEvents(events) {
    let added = [];
    for (const e of events) {
      const k = eventKey(e);
      if (this.seen.has(k)) continue;
      this.seen.add(k);
      added.push(e);
    }
    if (added.length === 0) return [];
    this.timeline = this.timeline.concat(added).sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0));
    for (const e of this.timeline.splice(TIMELINE_MAX)) this.seen.delete(eventKey(e));
    this.onChange('timeline', added);
    return added;
  }

  setConnection(state) {
    if (this.connection === state) return;
    this.connection = state;
    this.onChange('connection');
  }

  connect() {
    if (this.connection === 'unauthorized') return;
    const es = new EventSource('api/events');
    this.es = es;
    let reopened = false;
    es.addEventListener('open', () => {
      if (this.connection === 'reconnecting') reopened = true;
      this.retry = 1000;
      this.since = new Date();
      this.setConnection('live');
      // Events that happened while the stream was down are not resent:
      // read the timeline again.
      if (reopened) this.fetchTimeline();
    });
    for (const kind of KINDS) {
      es.addEventListener(kind, (m) => {
        this.since = new Date();
        try {
          this.set(kind, JSON.parse(m.data), true);
        } catch (err) {
          console.warn(`meshfed ui: bad ${kind} event:`, err.message);
        }
      });
    }
    es.addEventListener('timeline', (m) => {
      this.since = new Date();
      try {
        this.addEvents([JSON.parse(m.data)]);
      } catch (err) {
        console.warn('meshfed ui: bad timeline event:', err.message);
      }
    });
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CONNECTING) {
        this.setConnection('reconnecting');
        return;
      }
      // Closed: the hub refused the stream (401 after the session
      // expired, or a hub without the UI). Ask an endpoint which, and
      // retry with a growing delay unless the session is over.
      es.close();
      this.setConnection('reconnecting');
      getJSON('hub').then(() => {
        setTimeout(() => this.connect(), this.retry);
        this.retry = Math.min(this.retry * 2, 30000);
      }, (err) => {
        this.failed(err);
        if (!(err instanceof Unauthorized)) {
          setTimeout(() => this.connect(), this.retry);
          this.retry = Math.min(this.retry * 2, 30000);
        }
      });
    });
  }
}
