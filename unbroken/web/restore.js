// The restore loop of the browser SDK: the twin of unbroken/client/restorer.py,
// schedule.py, options.py and events.py. Publisher and Subscriber (unbroken.js) build on it.
//
// A client runs one *attempt* at a time (a session on one node). The attempt's watchdogs
// report the first fault; the client then starts new attempts by the retry schedule, across
// the URL list, until one delivers media again, and reports the restore (fault, detectMs,
// restoreMs, gapMs). A manual stop() never restores; running out of tries is reported as a
// `gave_up` event, never silently.

/** Session states (seed 004), as GET /api/v1/vocabulary names them. */
export const SESSION_STATES = Object.freeze(['ESTABLISHED', 'DISCONNECTED', 'FAILED']);
/** Stream states (seed 004). */
export const STREAM_STATES = Object.freeze(['PUBLISHING', 'UNPUBLISHED', 'PLAYING', 'STOPPED',
  'FAILED']);
/** Fault names in restore reports and events (unbroken/protocol/faults.py). */
export const FAULTS = Object.freeze({
  BITRATE_ZERO: 'bitrate_zero',
  MEDIA_SILENCE: 'media_silence',
  FRAMES_STALLED: 'frames_stalled',
  UNPUBLISHED: 'unpublished',
  PUBLISHER_MOVED: 'publisher_moved',
  NODE_DRAINING: 'node_draining',
  RECONNECT: 'reconnect',
  SESSION_FAILED: 'session_failed',
  STREAM_FAILED: 'stream_failed',
  HLS_ERROR: 'hls_error',
  CONNECTION_FAILED: 'connection_failed',
  CONNECTION_CLOSED: 'connection_closed',
  NETWORK_CHANGE: 'network_change',
  MISSING_PINGS: 'missing_pings',
  SESSION_CLOSED: 'session_closed',
});
/** Faults after which the next attempt does not insist on the same node. */
export const TRY_ELSEWHERE = Object.freeze(['node_draining', 'publisher_moved', 'reconnect',
  'unpublished']);
/** Event kinds (Python ClientEvent.kind); every event is also emitted as 'event'. */
export const EVENT_KINDS = Object.freeze(['session', 'stream', 'restoring', 'restored',
  'gave_up', 'transport', 'stream_event', 'transport_probe']);

/**
 * The restore knobs: Python's RestoreOptions in camelCase, same meanings and defaults.
 * Seed 004's knobs are: bitrateCheck ("Check bitrate"), changeCodec ("Change codec"),
 * bitrateCheckIntervalMs ("Bitrate check interval"), bitrateMaxTries ("Max tries"),
 * restore ("Restore connection"), timeoutMs ("Timeout"), maxTries ("Max tries"),
 * missingPings ("Missing pings"), pingPeriodMs ("Pings check period").
 */
export const RESTORE_DEFAULTS = Object.freeze({
  /** restart on session/stream failure until it works or tries run out */
  restore: true,
  /** first retries come at once, then follow this schedule (ms); capped by timeoutMs */
  backoffMs: Object.freeze([0, 25, 50, 100, 200, 400]),
  /** seed 004 "Timeout": the longest wait between two tries (ms) */
  timeoutMs: 1000,
  /** seed 004 "Max tries": tries per fault before giving up (a success resets the count) */
  maxTries: 100,
  /** +/- this fraction of random spread on every wait */
  jitter: 0.2,
  /** seed 004 "Missing pings": keep-alive periods of silence that mean the node is gone */
  missingPings: 3,
  /** seed 004 "Pings check period": the keep-alive period asked of the node (ms) */
  pingPeriodMs: 250,
  /** a session whose signaling came through a proxy (the stream manager) that broke while
   * its media still flows: re-attach the signaling within this long, keeping the media
   * session (a manager restart costs no gap); 0 = a new session at once (ms) */
  reattachMs: 10000,
  /** seed 004 "Check bitrate": sample the publisher's outbound bytes */
  bitrateCheck: true,
  /** seed 004 "Bitrate check interval" (ms) */
  bitrateCheckIntervalMs: 200,
  /** seed 004 "Max tries" of the bitrate check: zero samples in a row = stalled */
  bitrateMaxTries: 3,
  /** seed 004 "Change codec": when publishing H264 stalls, republish with VP8 */
  changeCodec: false,
  /** subscriber: no video/audio packet for this long → restore (0 = off) */
  mediaSilenceMs: 700,
  /** subscriber: video packets keep arriving but no frame is decoded this long → restore
   * (the browser asks for keyframes itself meanwhile; 0 = off) */
  frameStallMs: 1000,
  /** subscriber: stream inactive (publisher gone) this long → look for it elsewhere */
  inactiveTimeoutMs: 2000,
  /** online/offline and navigator.connection changes → restore at once */
  networkWatch: true,
  /** subscriber transport order (seed 000): 'whep' and/or 'hls', first preferred */
  transports: Object.freeze(['whep']),
  /** attempts in a row failing on a transport ("not live" excluded) → next transport */
  transportFailures: 3,
  /** while not on the first transport, try it again this often (ms); 0 = never */
  transportProbeMs: 10000,
  /** HLS: Low-Latency HLS when the server offers it */
  hlsLowLatency: true,
  /** seconds a single connect attempt may take (HTTP + ICE + DTLS + first media) */
  connectTimeoutS: 5.0,
});

/**
 * Browser-only knobs (no Python twin).
 */
export const BROWSER_DEFAULTS = Object.freeze({
  /** a peer connection 'disconnected' this long counts as failed (ms) */
  disconnectedGraceMs: 500,
  /** publisher, node draining: the old session keeps sending this long after the new one
   * does, so the old node's viewers can move make-before-break too (ms) */
  drainOverlapMs: 1500,
  /** where hls.js (ES module build) is loaded from for the HLS transport */
  hlsJsUrl: new URL('vendor/hls.min.mjs', import.meta.url).href,
});

/** Merge and check options like RestoreOptions.validate(). */
export function restoreOptions(given = {}) {
  const o = { ...RESTORE_DEFAULTS, ...BROWSER_DEFAULTS };
  for (const [k, v] of Object.entries(given)) if (k in o && v !== undefined) o[k] = v;
  if (o.maxTries < 1) throw new RangeError('maxTries must be at least 1');
  if (o.timeoutMs < 0 || o.backoffMs.some((b) => b < 0)) throw new RangeError('retry waits cannot be negative');
  if (!(o.jitter >= 0 && o.jitter < 1)) throw new RangeError('jitter must be in [0, 1)');
  if (!(o.reattachMs >= 0)) throw new RangeError('reattachMs cannot be negative');
  if (!(o.frameStallMs >= 0)) throw new RangeError('frameStallMs cannot be negative');
  if (o.missingPings < 1 || o.pingPeriodMs < 50 || o.pingPeriodMs > 60000) {
    throw new RangeError('missingPings >= 1 and pingPeriodMs in [50, 60000]');
  }
  if (o.bitrateMaxTries < 1 || o.bitrateCheckIntervalMs < 20) {
    throw new RangeError('bitrateMaxTries >= 1 and bitrateCheckIntervalMs >= 20');
  }
  if (o.transportFailures < 1 || o.transportProbeMs < 0) {
    throw new RangeError('transportFailures >= 1 and transportProbeMs >= 0');
  }
  if (!o.transports.length || o.transports.some((t) => t !== 'whep' && t !== 'hls')) {
    throw new RangeError(`transports must be taken from whep, hls: ${o.transports}`);
  }
  return o;
}

export const now = () => performance.now();
export const sleep = (ms, signal) => new Promise((resolve) => {
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
});

/** When to try again: immediately first, then a capped backoff with jitter. */
export class RetrySchedule {
  constructor(options) { this.options = options; this.tries = 0; }
  get exhausted() { return this.tries >= this.options.maxTries; }
  /** ms to wait before the next try (counts the try) */
  nextDelay() {
    const o = this.options;
    const i = this.tries++;
    let base = Math.min(i < o.backoffMs.length ? o.backoffMs[i] : o.timeoutMs, o.timeoutMs);
    if (base && o.jitter) base *= 1 + (Math.random() * 2 - 1) * o.jitter;
    return base;
  }
}

/** A minimal event emitter: on(kind, fn), off(kind, fn); '*' is not used: 'event' gets all. */
export class Emitter {
  constructor() { this._handlers = new Map(); }
  /** @param {string} kind @param {(event: object) => void} fn */
  on(kind, fn) {
    if (!this._handlers.has(kind)) this._handlers.set(kind, new Set());
    this._handlers.get(kind).add(fn);
    return this;
  }
  off(kind, fn) { this._handlers.get(kind)?.delete(fn); return this; }
  _fire(kind, event) {
    for (const fn of this._handlers.get(kind) || []) {
      try { fn(event); } catch (err) { console.error(`unbroken: ${kind} handler failed`, err); }
    }
  }
}

/** The fault an attempt reports: what, when it was last fine, when found, where to go. */
class Fault {
  constructor(name, lastGoodAt, detectedAt, lastMediaAt, preferUrl) {
    Object.assign(this, { name, lastGoodAt, detectedAt, lastMediaAt, preferUrl });
  }
}

/**
 * One session on one node. Subclasses implement open() and close(), call mediaArrived()
 * as media flows, and reportFault() once. Timers made with every()/after() and fetches
 * with this.signal end with stopBackground().
 */
export class Attempt {
  /** received media proves the path works; a publisher's own sent bytes do not */
  static mediaProvesHealth = true;

  constructor(client, url) {
    this.client = client;
    this.url = url;
    this.options = client.options;
    this.firstMediaAt = null;
    this.lastMediaAt = null;
    this.tries = 0;
    this.fault = null;
    this.controller = new AbortController();
    this.signal = this.controller.signal;
    this._timers = new Set();
    this._faultWaiters = [];
    this._mediaWaiters = [];
  }

  every(ms, fn) {
    const t = setInterval(fn, ms);
    this._timers.add(() => clearInterval(t));
    return () => clearInterval(t);
  }

  after(ms, fn) {
    const t = setTimeout(fn, ms);
    this._timers.add(() => clearTimeout(t));
    return () => clearTimeout(t);
  }

  stopBackground() {
    for (const clear of this._timers) clear();
    this._timers.clear();
    this.controller.abort();
  }

  reportFault(name, lastGoodAt = null, preferUrl = null) {
    if (this.fault) return;
    const t = now();
    let lastGood = lastGoodAt ?? t;
    if (this.constructor.mediaProvesHealth && this.lastMediaAt) lastGood = Math.max(lastGood, this.lastMediaAt);
    this.fault = new Fault(name, Math.min(lastGood, t), t, this.lastMediaAt, preferUrl);
    for (const w of this._faultWaiters.splice(0)) w(this.fault);
    for (const w of this._mediaWaiters.splice(0)) w();
  }

  mediaArrived() {
    const t = now();
    this.lastMediaAt = t;
    if (this.firstMediaAt === null) {
      this.firstMediaAt = t;
      for (const w of this._mediaWaiters.splice(0)) w();
    }
  }

  /** Wait for the first media; a fault meanwhile or the timeout throws. */
  async waitMedia(timeoutMs) {
    if (this.firstMediaAt === null && !this.fault) {
      let cancel;
      await new Promise((resolve) => {
        this._mediaWaiters.push(resolve);
        cancel = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(cancel);
    }
    if (this.firstMediaAt !== null) return;
    if (this.fault) throw new Error(`${this.url}: ${this.fault.name}`);
    throw new Error(`${this.url}: no media within ${timeoutMs} ms`);
  }

  /** Resolves with the Fault (never rejects). */
  waitFault() {
    if (this.fault) return Promise.resolve(this.fault);
    return new Promise((resolve) => this._faultWaiters.push(resolve));
  }

  /** Check the watchdogs now (the page was frozen or hidden: timers may have slept). */
  checkNow() {}

  /** The node's event stream has been silent for over two keep-alive periods: the node
   * itself (or the path to it) is gone, whatever fault was noticed first. */
  nodeUnheard() {
    return Boolean(this.events?.lastHeard) && now() - this.events.lastHeard > 2 * this.options.pingPeriodMs;
  }

  async open() { throw new Error('not implemented'); }
  async close() { this.stopBackground(); }
}

/** Race a promise against a timeout (ms); the timeout rejects. */
export function withTimeout(promise, ms, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

/**
 * Base of Publisher and Subscriber: attempts, restores, events, network watch, manual stop.
 * Events are plain objects {kind, state, reason, url, t, ...report} like ClientEvent.as_dict();
 * each is emitted under its kind and under 'event'.
 */
export class RestoringClient extends Emitter {
  static role = '';
  static liveState = '';
  static stoppedState = '';

  constructor({ urls, url, stream, token, ...options }) {
    super();
    const list = urls ?? (url !== undefined ? [url] : ['']);
    this.urls = (typeof list === 'string' ? list.split(',') : list).map((u) => u.trim().replace(/\/+$/, ''));
    if (!this.urls.length) throw new RangeError('at least one URL is needed');
    if (!stream) throw new RangeError('stream is needed');
    this.stream = stream;
    this.token = token;
    this.options = restoreOptions(options);
    this.attempt = null;
    this.restores = [];
    this.events = [];  // the last 1000 events
    this.state = 'NEW';
    this.tries = 0;  // tries of the restore in progress
    this._urlIndex = 0;
    this._stopping = false;
    this._stop = new AbortController();
    this._wake = null;  // resolves the retry wait early (network change)
    this._makeBeforeBreak = false;  // attempts being connected run beside a live old one
    this._unwatch = [];
  }

  /** URL of the current attempt's node */
  get url() { return this.attempt ? this.attempt.url : null; }

  /** Connect (trying the URL list by the retry schedule); rejects if all tries fail. */
  async start() {
    const attempt = await this._connect(0, null);
    if (!attempt) {
      if (!this._stopping) {
        this._emit({ kind: 'gave_up', state: 'FAILED', reason: 'could not connect', url: this.urls[0] });
      }
      throw new Error(`${this.constructor.role}: could not connect to ${this.urls}`);
    }
    this._established(attempt);
    if (this.options.networkWatch) this._watchNetwork();
    this._watchPage();
    this._supervise();
    return this;
  }

  /** Manual stop: ends the session, cancels every timer, never restores. */
  async stop() {
    if (this._stopping) return;
    this._stopping = true;
    this._stop.abort();
    this._wake?.();
    this._swapped?.();
    for (const unwatch of this._unwatch.splice(0)) unwatch();
    const attempt = this.attempt;
    if (attempt) await attempt.close();
    this._emit({ kind: 'stream', state: this.constructor.stoppedState, reason: 'stopped by user', url: attempt?.url ?? null });
    this._emit({ kind: 'session', state: 'DISCONNECTED', reason: 'stopped by user', url: attempt?.url ?? null });
    this.state = 'DISCONNECTED';
  }

  // to implement ------------------------------------------------------------------------
  _newAttempt(url) { throw new Error('not implemented'); }
  /** Adjust for the next attempt (e.g. change codec); false = give up. */
  _afterFault(fault) { return true; }
  _reportExtra() { return {}; }
  /** The restore ended: `next` plays, or null (gave up). */
  _settled(next) {}
  /** The attempt failed to open or to bring media (for transport failover). */
  _attemptFailed(attempt, err) {}
  /** Make-before-break (drain): `next` delivers media (or is null: no restore); end `old`. */
  _handover(old, next) { this._closeInBackground(old); }

  // internals ---------------------------------------------------------------------------
  _emit(event) {
    const e = { ...event, t: Date.now() / 1000 };
    for (const k of Object.keys(e)) if (e[k] === null || e[k] === undefined) delete e[k];
    this.events.push(e);
    if (this.events.length > 1000) this.events.shift();
    this._fire(e.kind, e);
    this._fire('event', e);
  }

  _established(attempt) {
    this.attempt = attempt;
    this.state = this.constructor.liveState;
    this._emit({ kind: 'session', state: 'ESTABLISHED', url: attempt.url });
    this._emit({ kind: 'stream', state: this.constructor.liveState, url: attempt.url });
  }

  _listen(target, type, fn) {
    if (!target?.addEventListener) return;
    target.addEventListener(type, fn);
    this._unwatch.push(() => target.removeEventListener(type, fn));
  }

  /** online / offline / navigator.connection change → restore at once. */
  _watchNetwork() {
    const changed = (why) => () => {
      if (this._stopping) return;
      this._emit({ kind: 'stream_event', reason: `network: ${why}`, url: this.url });
      if (this.attempt && !this.attempt.fault && this.state !== 'FAILED') {
        this.attempt.reportFault(FAULTS.NETWORK_CHANGE, now());
      }
      this._wake?.();  // a restore waiting for its next try goes now
    };
    this._listen(globalThis, 'online', changed('online'));
    this._listen(globalThis, 'offline', changed('offline'));
    this._listen(globalThis.navigator?.connection, 'change', changed('connection change'));
  }

  /** The page visible again (or resumed after the browser froze it): check at once. */
  _watchPage() {
    const check = () => { if (!this._stopping && document.visibilityState === 'visible') this.attempt?.checkNow(); };
    this._listen(globalThis.document, 'visibilitychange', check);
    this._listen(globalThis.document, 'resume', check);
  }

  async _supervise() {
    while (!this._stopping) {
      const attempt = this.attempt;
      const fault = await Promise.race([attempt.waitFault(),
        new Promise((resolve) => { this._swapped = () => resolve(null); })]);
      this._swapped = null;
      if (this._stopping) return;
      if (fault === null) continue;  // the attempt was swapped (transport switch)
      const { role } = this.constructor;
      this.state = 'FAILED';
      this._emit({ kind: 'stream', state: 'FAILED', reason: fault.name, url: attempt.url });
      // make-before-break on a drain notice: the old session runs until the new one plays
      const keepOld = fault.name === FAULTS.NODE_DRAINING;
      if (!keepOld) this._closeInBackground(attempt);
      if (!(this.options.restore && this._afterFault(fault))) {
        if (keepOld) this._closeInBackground(attempt);
        this._settled(null);
        this._emit({ kind: 'session', state: 'FAILED', reason: fault.name, url: attempt.url });
        this._emit({ kind: 'gave_up', state: 'FAILED', reason: fault.name, url: attempt.url });
        return;
      }
      this._emit({ kind: 'restoring', reason: fault.name, url: attempt.url });
      let first = this._urlIndex;
      if (fault.preferUrl && this.urls.includes(fault.preferUrl)) first = this.urls.indexOf(fault.preferUrl);
      // a node that stopped answering (missing pings; or media silence found first while
      // its keep-alives are missing too: silent path loss) would hold the first try until
      // connectTimeoutS: start with the next URL (browser choice; the Python SDK retries it)
      else if (TRY_ELSEWHERE.includes(fault.name) || fault.name === FAULTS.MISSING_PINGS
               || attempt.nodeUnheard()) {
        first = (first + 1) % this.urls.length;
      }
      this._makeBeforeBreak = keepOld;
      const next = await this._connect(first, fault);
      this._makeBeforeBreak = false;
      if (keepOld) this._handover(attempt, next);
      this._settled(next);
      if (this._stopping) { if (next) this._closeInBackground(next); return; }
      if (!next) {
        this._emit({ kind: 'session', state: 'FAILED', reason: fault.name, url: attempt.url });
        this._emit({ kind: 'gave_up', state: 'FAILED', reason: `${fault.name}: max tries exhausted`, url: attempt.url });
        console.info(`unbroken ${role}: gave up after ${fault.name}`);
        return;
      }
      this.attempt = next;
      const report = {
        fault: fault.name,
        detectMs: round1(fault.detectedAt - fault.lastGoodAt),
        restoreMs: round1(next.firstMediaAt - fault.detectedAt),
        gapMs: keepOld ? 0 : round1(next.firstMediaAt - (fault.lastMediaAt ?? fault.lastGoodAt)),
        tries: next.tries,
        url: next.url,
        ...this._reportExtra(),
      };
      this.restores.push(report);
      this.state = this.constructor.liveState;
      this._emit({ kind: 'restored', state: this.constructor.liveState, reason: fault.name, ...report });
    }
  }

  /** Make `next` (already delivering media) the current attempt. */
  _swapAttempt(next) {
    this.attempt = next;
    this._swapped?.();
  }

  _closeInBackground(attempt) {
    attempt.close().catch((err) => console.debug('unbroken: close failed', err));
  }

  /** Try URLs round-robin from `first`: no wait between URLs of a round, rounds spaced by
   * the retry schedule. Returns the attempt that delivers media, or null. */
  async _connect(first, fault) {
    const schedule = new RetrySchedule(this.options);
    const n = this.urls.length;
    let index = first;
    while (!schedule.exhausted && !this._stopping) {
      if ((index - first) % n === 0) {
        const delay = schedule.nextDelay();
        this.tries = schedule.tries;
        if (delay) await this._wait(delay);
        if (this._stopping) break;
      }
      const url = this.urls[index % n];
      const attempt = this._newAttempt(url);
      try {
        await withTimeout(attempt.open(), this.options.connectTimeoutS * 1000, `${url} open`);
        await attempt.waitMedia(this.options.connectTimeoutS * 1000);
      } catch (err) {
        this._attemptFailed(attempt, err);
        this._closeInBackground(attempt);
        if (!this._stopping) console.debug(`unbroken ${this.constructor.role}: attempt on ${url} failed: ${err.message || err}`);
        index += 1;
        continue;
      }
      if (this._stopping) { this._closeInBackground(attempt); return null; }
      this._urlIndex = index % n;
      attempt.tries = schedule.tries;
      return attempt;
    }
    return null;
  }

  /** Wait `ms`, or less if a network change or stop() wakes us. */
  _wait(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const self = this;
      function done() { clearTimeout(t); if (self._wake === done) self._wake = null; resolve(); }
      this._wake = done;
    });
  }
}

const round1 = (x) => Math.round(x * 10) / 10;

// --- re-attaching a proxied event stream (twin of unbroken/client/reattach.py) --------
//
// Media never crosses a proxy (the stream manager): when the stream manager between the
// page and its node restarts or dies, the node and the media session are fine and only the
// signaling path broke. A session whose answer came through a proxy (a `Via` header) then
// re-attaches its event stream — through the same proxy, or another replica of it — instead
// of opening a new media session, as long as its media still proves the session alive. A
// session on a node reached directly has no such doubt: a lost event stream there is a node
// that ended the session or died.

/** Answers through a proxy that say "not now", never "no such session": the manager
 * restarting (it does not know the node yet: 503), busy (429), its own drain (503). */
export const RETRY_STATUSES = Object.freeze([429, 503]);

/**
 * What a lost, proxied event stream does next: Python's ReattachPolicy, in ms. Pure.
 * `waitsMs`: the wait before each try (the last one repeats); `maxMs`: how long a session
 * may live without its event stream (0 = never re-attach).
 */
export class ReattachPolicy {
  constructor({ waitsMs = [0, 50, 100, 200, 250], maxMs = 10000 } = {}) {
    this.waitsMs = Object.freeze([...waitsMs]);
    this.maxMs = maxMs;
    Object.freeze(this);
  }

  /**
   * ms to wait before try number `tries` (0 = the first re-attach), or null: the session
   * is gone (fault). `status`: the HTTP status of the last try (null: the stream just
   * ended, or the proxy could not be reached); `elapsedMs`: since the stream was lost;
   * `mediaAlive`: the session's media still proves it alive.
   */
  nextWait(status, tries, elapsedMs, mediaAlive) {
    if (this.maxMs <= 0 || !mediaAlive) return null;
    // 404/410: the session is gone; 401/403: not ours; 502/504: the node is failing
    if (status !== null && status !== undefined && !RETRY_STATUSES.includes(status)) return null;
    if (elapsedMs >= this.maxMs) return null;
    const { waitsMs } = this;
    const waitMs = waitsMs.length ? waitsMs[Math.min(tries, waitsMs.length - 1)] : 0;
    return Math.min(waitMs, Math.max(0, this.maxMs - elapsedMs));
  }
}

/**
 * Reads a WHIP/WHEP session's server-sent events (fetch, so keep-alive comments count and a
 * token can be sent), hands events to onEvent(name, data), and reports 'session_closed' when
 * the stream ends or 'missing_pings' after `missingPings` silent keep-alive periods.
 *
 * `reattach` (a ReattachPolicy): the session came through a proxy: a stream that ends, or a
 * proxy that cannot be reached, is attached again while `mediaAlive()` (bool or Promise)
 * says the session lives and the policy allows — keep-alives are not expected meanwhile;
 * 'session_closed' only when it says the session is gone. null: the node itself served the
 * stream, its end is the session's end.
 */
export class EventStreamWatch {
  constructor(attempt, url, token, onEvent, { reattach = null, mediaAlive = null } = {}) {
    this.attempt = attempt;
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.reattach = reattach;
    this.mediaAlive = mediaAlive;
    this.lastHeard = now();
    this.reattached = 0;  // times the stream was attached again after a loss
    this.reattaching = false;  // keep-alives are not expected meanwhile
  }

  start() {
    const { pingPeriodMs, missingPings } = this.attempt.options;
    this.limit = pingPeriodMs * missingPings;
    this._run(Math.max(100, Math.min(10000, pingPeriodMs)));
    this.attempt.every(pingPeriodMs / 2, () => this.check());
  }

  check() {
    if (!this.reattaching && now() - this.lastHeard > this.limit) {
      this.attempt.reportFault(FAULTS.MISSING_PINGS, this.lastHeard);
    }
  }

  async _run(keepaliveMs) {
    const { attempt } = this;
    const first = await this._read(keepaliveMs);
    if (attempt.signal.aborted) return;
    if (first.status !== null && first.status !== 200) return;  // no event stream for us: media watch only
    while (await this._attachAgain(keepaliveMs)) { /* read again until it was lost again */ }
    if (!attempt.signal.aborted) attempt.reportFault(FAULTS.SESSION_CLOSED, this.lastHeard);
  }

  /** After a lost stream: true once it was read again (and lost again), false when the
   * session is gone. */
  async _attachAgain(keepaliveMs) {
    const { attempt } = this;
    // stopped, or a fault: the session is being replaced
    if (!this.reattach || attempt.signal.aborted || attempt.fault) return false;
    this.reattaching = true;
    const lostAt = now();
    let status = null;
    let tries = 0;
    try {
      for (;;) {
        const alive = await this._mediaIsAlive();
        if (attempt.signal.aborted || attempt.fault) return false;
        const waitMs = this.reattach.nextWait(status, tries, now() - lostAt, alive);
        if (waitMs === null) {
          console.info(`unbroken: event stream not attached again (status ${status}, ${tries} tries, `
            + `after ${Math.round(now() - lostAt)} ms, media ${alive ? 'alive' : 'not alive'})`);
          return false;
        }
        if (waitMs) await sleep(waitMs, attempt.signal);
        if (attempt.signal.aborted) return false;
        tries += 1;
        const got = await this._read(keepaliveMs, lostAt);
        if (got.attached) return true;
        status = got.status;
      }
    } finally {
      this.reattaching = false;
    }
  }

  async _mediaIsAlive() {
    if (!this.mediaAlive) return false;
    try { return Boolean(await this.mediaAlive()); } catch { return false; }
  }

  /** Read the stream until it ends: {status, attached}. status: the HTTP status, null when
   * it could not be reached; attached: it answered 200 (and was read until it ended or
   * broke). `lostAt`: this is a re-attach of a stream lost then. */
  async _read(keepaliveMs, lostAt = null) {
    const { attempt } = this;
    const headers = this.token ? { Authorization: `Bearer ${this.token}` } : {};
    const url = new URL(this.url);
    url.searchParams.set('keepalive_ms', String(keepaliveMs));
    let res;
    try {
      res = await fetch(url, { headers, signal: attempt.signal, cache: 'no-store' });
    } catch {
      return { status: null, attached: false };  // unreachable (or aborted: the caller checks)
    }
    if (res.status !== 200) {
      res.body?.cancel().catch(() => {});
      return { status: res.status, attached: false };
    }
    this.lastHeard = now();
    if (lostAt !== null) {
      this.reattached += 1;
      this.reattaching = false;
      console.info(`unbroken: event stream attached again after ${Math.round(this.lastHeard - lostAt)} ms`);
    }
    try {
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      let event = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.lastHeard = now();
        buffer += value;
        const lines = buffer.split(/\r?\n/);
        buffer = lines.pop();
        for (const line of lines) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:') && event) {
            let data = {};
            try { data = JSON.parse(line.slice(5).trim()) || {}; } catch { /* not JSON */ }
            this.onEvent(event, data);
            event = '';
          }
        }
      }
    } catch { /* broken off (or aborted: the caller checks) */ }
    return { status: 200, attached: true };
  }
}

/**
 * Samples a growing counter every `intervalMs`; `maxTries` samples in a row without growth
 * → onFault(lastGrowthAt). Seed 004's bitrate check and the subscriber's media silence.
 */
export class StallWatchdog {
  constructor(attempt, sample, intervalMs, maxTries, onFault) {
    Object.assign(this, { attempt, sample, intervalMs, maxTries, onFault });
    this.paused = false;
    this.lastGrowthAt = now();
    this.last = -1;
    this.zeros = 0;
    this.done = false;
    this._busy = false;
  }

  start() {
    this._stop = this.attempt.every(this.intervalMs, () => this.check());
    return this;
  }

  stop() { this.done = true; this._stop?.(); }

  async check() {
    if (this.done || this._busy) return;
    this._busy = true;
    try {
      const value = await this.sample();
      if (this.done) return;
      if (value > this.last || this.paused) {
        this.lastGrowthAt = now();
        this.zeros = 0;
      } else if (this.last >= 0 && ++this.zeros >= this.maxTries) {
        this.stop();
        this.onFault(this.lastGrowthAt);
      }
      this.last = Math.max(this.last, value);
    } catch { /* connection closing: its state reports it */ } finally { this._busy = false; }
  }
}
