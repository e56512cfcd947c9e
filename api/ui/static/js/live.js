// Live updates without polling: one blocking query on GET /v1/ui/watch
// waits (up to 30 s) until the catalog on this agent applies anything new,
// then the page reloads what it shows. A failed watch means the agent is
// unreachable: the banner says so, and the watch retries with a growing
// pause (0.5 s up to 5 s) until the agent answers again.

import { api, ApiError } from './api.js';

const WAIT = '30s';

export class Live {
  // onChange(index) runs when the catalog moved; onConnection(ok, err)
  // when the agent becomes unreachable or reachable again.
  constructor({ onChange, onConnection }) {
    this.onChange = onChange;
    this.onConnection = onConnection;
    this.index = 0;
    this.connected = true;
    this.controller = null;
  }

  start() { this.loop(); }

  // restart abandons the blocked query (after a token change, say).
  restart() {
    this.controller?.abort();
  }

  async loop() {
    let failures = 0;
    for (;;) {
      this.controller = new AbortController();
      try {
        const { data } = await api('GET', `/v1/ui/watch?index=${this.index}&wait=${WAIT}`, { signal: this.controller.signal });
        failures = 0;
        this.setConnected(true);
        if (data.index !== this.index) {
          const first = this.index === 0;
          this.index = data.index;
          if (!first) this.onChange(this.index);
        }
        // The index the next query blocks on, for whoever debugs the page.
        document.body.dataset.liveIndex = String(this.index);
      } catch (e) {
        if (e.name === 'AbortError') { this.index = 0; continue; }
        failures++;
        // A refused token is not a lost connection: the view says so.
        if (!(e instanceof ApiError) || e.status >= 500 || e.status === 429) this.setConnected(false, e);
        this.index = 0;
        await sleep(Math.min(5000, 250 * 2 ** Math.min(failures, 5)));
      }
    }
  }

  setConnected(ok, err) {
    if (ok === this.connected) return;
    this.connected = ok;
    this.onConnection(ok, err);
  }
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Refresher runs a view's reload when asked, never two at once and never
// more often than every gap: 200 ms, or as long as the last reload took
// (up to 2 s), so that under a stream of changes a slow page (10,000
// instances) spends at most half its time reloading.
export class Refresher {
  constructor(run) {
    this.run = run;
    this.busy = false;
    this.again = false;
    this.last = 0;
    this.gap = 200;
    this.timer = null;
  }

  request() {
    if (this.busy) { this.again = true; return; }
    if (this.timer) return;
    const wait = Math.max(0, this.last + this.gap - performance.now());
    this.timer = setTimeout(() => { this.timer = null; this.go(); }, wait);
  }

  async go() {
    this.busy = true;
    const t0 = performance.now();
    try { await this.run(); } finally {
      const took = performance.now() - t0;
      this.last = performance.now();
      this.gap = Math.min(2000, Math.max(200, took));
      this.busy = false;
      if (this.again) { this.again = false; this.request(); }
    }
  }

  cancel() { clearTimeout(this.timer); this.timer = null; this.again = false; }
}
