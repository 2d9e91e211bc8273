// Publisher and Subscriber of the browser SDK: the twins of unbroken/client/publisher.py
// and subscriber.py (WHEP and HLS transports, transport failover). Import them from
// /web/unbroken.js.

import { publish, play, UnbrokenError } from './unbroken.js';
import {
  Attempt, EventStreamWatch, FAULTS, ReattachPolicy, RestoringClient, StallWatchdog, now, withTimeout,
} from './restore.js';

export {
  BROWSER_DEFAULTS, EVENT_KINDS, FAULTS, RESTORE_DEFAULTS, RETRY_STATUSES, ReattachPolicy,
  SESSION_STATES, STREAM_STATES, TRY_ELSEWHERE, restoreOptions,
} from './restore.js';

const FIRST_MEDIA_POLL_MS = 10;   // how soon the first frame of an attempt is noticed
const MEDIA_POLL_MS = 50;
const WAIT_LIVE_MS = 500;         // the node holds a WHEP POST this long for a restoring publisher
const UPSTREAM_SILENCE_MS = 2500; // silence tolerated while the node is still heard from
const MOVED_POLL_MS = 100;
const HLS_STALL_MS = 4000;        // HLS: the playhead not moving this long → restore
const NOT_LIVE = [404, 409];      // "not live" answers: not a transport failure
// the node's receiver reports come every 0.5-1.5 s: one this recent proves it receives us
const REPORT_PROVES_ALIVE_MS = 2500;

function authHeaders(token) { return token ? { Authorization: `Bearer ${token}` } : {}; }

/** Last path segment of a session Location: the session id `?replaces=` takes. */
function sessionId(location) {
  return location ? new URL(location).pathname.split('/').filter(Boolean).pop() : null;
}

/** 'failed'/'closed' → a fault at once; 'disconnected' → a fault after the grace period. */
function watchConnection(attempt, pc) {
  let cancelGrace = null;
  pc.addEventListener('connectionstatechange', () => {
    const state = pc.connectionState;
    if (state === 'failed' || state === 'closed') {
      attempt.reportFault(`connection_${state}`, attempt.lastMediaAt);
    } else if (state === 'disconnected') {
      cancelGrace ??= attempt.after(attempt.options.disconnectedGraceMs, () => {
        if (pc.connectionState === 'disconnected') attempt.reportFault(FAULTS.CONNECTION_FAILED, attempt.lastMediaAt);
      });
    } else if (cancelGrace) {
      cancelGrace();
      cancelGrace = null;
    }
  });
}

/** Watch the session's server-sent events. Its answer came through a proxy (the stream
 * manager): a lost event stream is attached again while `mediaAlive()` says the media
 * session lives (a manager restart costs no new session); otherwise its loss is the end. */
function watchEvents(attempt, session, onEvent, mediaAlive) {
  const reattach = session.proxied ? new ReattachPolicy({ maxMs: attempt.options.reattachMs }) : null;
  const watch = new EventStreamWatch(attempt, session.events, attempt.client.token, onEvent,
    { reattach, mediaAlive });
  watch.start();
  return watch;
}

/** ms since the last RTCP receiver report from the node on any of our streams (Chromium
 * stamps remote-inbound-rtp stats with its arrival), null before the first. */
async function reportAge(pc) {
  if (!pc) return null;
  const report = await pc.getStats();
  let newest = null;
  report.forEach((s) => {
    if (s.type === 'remote-inbound-rtp' && (newest === null || s.timestamp > newest)) newest = s.timestamp;
  });
  return newest === null ? null : performance.timeOrigin + performance.now() - newest;
}

/** Sum of `field` over the RTP stats of `type` and `kind` ('' = any kind). */
async function rtpSum(statsSource, type, kind, field) {
  const report = await statsSource.getStats();
  let sum = 0;
  let codec = null;
  report.forEach((s) => {
    if (s.type !== type || (kind && s.kind !== kind)) return;
    sum += s[field] || 0;
    const c = s.codecId && report.get(s.codecId);
    if (c) codec = c.mimeType.split('/')[1].toLowerCase();
  });
  return { sum, codec };
}

// --- publisher ------------------------------------------------------------------------

class PublishAttempt extends Attempt {
  static mediaProvesHealth = false;  // bytes "sent" into a dead path still count up

  constructor(client, url, replaces) {
    super(client, url);
    this.replaces = replaces;
    this.codec = client.codec;
    this.session = null;
    this.events = null;
    this.bytesSent = 0;
    this.sentCodec = null;
  }

  async open() {
    const { client } = this;
    const media = await client._media();
    const session = await publish({
      url: this.url, stream: client.stream, token: client.token, media, videoCodec: this.codec,
      replaces: this.replaces, iceServers: client.iceServers, signal: this.signal,
    });
    if (this.signal.aborted) { await session.stop(); throw new Error('attempt closed'); }
    this.session = session;
    watchConnection(this, session.pc);
    if (session.events) {
      this.events = watchEvents(this, session, (e, d) => this._onServerEvent(e, d), () => this._nodeReceives());
    }
    this._watchBytes();
  }

  /** The node's receiver reports say it still gets our media (our own sent bytes do not). */
  async _nodeReceives() {
    const age = await reportAge(this.session?.pc);
    return age !== null && age < REPORT_PROVES_ALIVE_MS;
  }

  /** Media "arrives" while the video sender's bytes grow; seed 004's bitrate check reports
   * a stall when they stop growing for bitrateMaxTries samples. */
  _watchBytes() {
    const pc = this.session.pc;
    const tr = pc.getTransceivers().find((t) => t.sender.track?.kind === 'video')
      || pc.getTransceivers().find((t) => t.sender.track);
    if (!tr) return;
    const { sender } = tr;
    const sample = async () => {
      const { sum, codec } = await rtpSum(sender, 'outbound-rtp', '', 'bytesSent');
      if (sum > this.bytesSent) { this.bytesSent = sum; this.mediaArrived(); }
      if (codec) this.sentCodec = codec;
      return sum;
    };
    const o = this.options;
    this.bitrate = new StallWatchdog(this, sample, o.bitrateCheckIntervalMs,
      o.bitrateCheck ? o.bitrateMaxTries : Infinity,
      (lastGood) => this.reportFault(FAULTS.BITRATE_ZERO, lastGood)).start();
    const stopFirst = this.every(FIRST_MEDIA_POLL_MS, async () => {
      if (this.firstMediaAt !== null) { stopFirst(); return; }
      try { await sample(); } catch { /* closing */ }
    });
  }

  _onServerEvent(event, data) {
    if (event === 'reconnect') this.reportFault(data.code === 'draining' ? FAULTS.NODE_DRAINING : FAULTS.RECONNECT, now());
  }

  checkNow() {
    this.events?.check();
    this.bitrate?.check();
  }

  /** Stop sending but keep the session on the node: a successor on the same node takes
   * it over with `?replaces=` (viewers keep their sessions); deleteResource() otherwise. */
  async closeMedia() {
    this.stopBackground();
    this.session?.pc.close();
  }

  async deleteResource() {
    if (this.session) await this.session.stop();
  }

  async close() {
    this.stopBackground();
    if (this.session) await this.session.stop();
  }
}

/**
 * Publishes a MediaStream over WHIP to the first URL that takes it and restores publishing
 * by itself: new sessions across `urls` (first try at once), `?replaces=` on the same node
 * so viewers keep their sessions, a new encoder after a stall (VP8 with `changeCodec`).
 *
 * @example
 * const pub = new Publisher({ urls: ['https://manager'], stream: 'cam1', codec: 'h264', mediaStream });
 * pub.on('restored', (r) => console.log(r.fault, r.restoreMs)); await pub.start();
 */
export class Publisher extends RestoringClient {
  static role = 'publisher';
  static liveState = 'PUBLISHING';
  static stoppedState = 'UNPUBLISHED';

  /**
   * @param {object} o
   * @param {string[]|string} o.urls  node or manager base URLs ('' = this page's origin), in order
   * @param {string} o.stream         stream name
   * @param {'h264'|'vp8'} [o.codec='h264']  video codec to start with
   * @param {MediaStream} [o.mediaStream]  what to send; default: getUserMedia(o.constraints),
   *   owned by the publisher (its tracks stop on stop())
   * @param {MediaStreamConstraints} [o.constraints={video: true, audio: true}]
   * @param {string} [o.token]        bearer token
   * @param {RTCIceServer[]} [o.iceServers=[]]
   * and every restore option (RESTORE_DEFAULTS, BROWSER_DEFAULTS)
   */
  constructor({ codec = 'h264', mediaStream, constraints, iceServers = [], ...rest }) {
    super(rest);
    this.codec = codec;
    this.mediaStream = mediaStream || null;
    this.constraints = constraints || { video: true, audio: true };
    this.iceServers = iceServers;
    this._ownMedia = !mediaStream;
  }

  async _media() {
    if (!this.mediaStream) this.mediaStream = await navigator.mediaDevices.getUserMedia(this.constraints);
    return this.mediaStream;
  }

  _newAttempt(url) {
    const previous = this.attempt;
    const replaces = previous && previous.url === url && previous.session ? sessionId(previous.session.location) : null;
    return new PublishAttempt(this, url, replaces);
  }

  _closeInBackground(attempt) {
    if (attempt === this.attempt && !this._stopping && this.options.restore && attempt.session) {
      this._replacing = attempt;  // its resource is deleted only if no successor replaces it
      attempt.closeMedia();
      return;
    }
    super._closeInBackground(attempt);
  }

  _settled(next) {
    const old = this._replacing;
    this._replacing = null;
    if (old && !(next && next.url === old.url && next.replaces === sessionId(old.session.location))) {
      old.deleteResource().catch(() => {});
    }
  }

  /** Drain: the old session keeps sending for drainOverlapMs after the new one does (its
   * viewers are moving too and play from it until their new sessions play), then ends;
   * at once if there is no new one or the client stops meanwhile. */
  _handover(old, next) {
    if (!next || this._stopping) { super._handover(old, next); return; }
    const done = () => {
      clearTimeout(timer);
      this._stop.signal.removeEventListener('abort', done);
      RestoringClient.prototype._closeInBackground.call(this, old);
    };
    const timer = setTimeout(done, this.options.drainOverlapMs);
    this._stop.signal.addEventListener('abort', done, { once: true });
  }

  _afterFault(fault) {
    if (fault.name === FAULTS.BITRATE_ZERO && this.options.changeCodec) {
      if (this.codec === 'vp8') return false;  // VP8 stalled too: give up and say so (seed 004)
      this.codec = 'vp8';
    }
    return true;
  }

  _reportExtra() { return { codec: this.codec }; }

  async stop() {
    await super.stop();
    this._settled(null);
    if (this._ownMedia && this.mediaStream) this.mediaStream.getTracks().forEach((t) => t.stop());
  }

  /** {state, url, codec, restores, tries, connection, bytesSent} */
  stats() {
    const a = this.attempt;
    return {
      state: this.state, url: this.url, codec: a?.sentCodec || this.codec, restores: this.restores.length,
      tries: this.tries, connection: a?.session ? a.session.pc.connectionState : 'new', bytesSent: a?.bytesSent || 0,
    };
  }
}

// --- subscriber -----------------------------------------------------------------------

/** Follow the decoded frames of a playing session: media arrival and a silence watchdog. */
class PlayAttempt extends Attempt {
  constructor(client, url, video) {
    super(client, url);
    this.transport = 'whep';
    this.video = video;
    this.session = null;
    this.events = null;
    this.framesDecoded = 0;
    this.codec = null;
    this._inactiveSince = null;
    this._silenceExtended = false;
    this._silence = null;
  }

  async open() {
    const { client } = this;
    const session = await play({
      url: this.url, stream: client.stream, token: client.token, video: this.video,
      waitLiveMs: WAIT_LIVE_MS, iceServers: client.iceServers, signal: this.signal,
    });
    if (this.signal.aborted) { await session.stop(); throw new Error('attempt closed'); }
    this.session = session;
    watchConnection(this, session.pc);
    if (session.events) {
      this.events = watchEvents(this, session, (e, d) => this._onServerEvent(e, d), () => this._mediaFlows());
    }
    this._followFrames();
    if (this.options.mediaSilenceMs) this._watchSilence(this.options.mediaSilenceMs);
    if (this.options.frameStallMs) this._watchFrames(this.options.frameStallMs);
  }

  /** Frames decoded (getStats) within the silence window (1 s when that check is off). */
  _mediaFlows() {
    const windowMs = this.options.mediaSilenceMs || 1000;
    return this.lastMediaAt !== null && now() - this.lastMediaAt < windowMs;
  }

  _followFrames() {
    const pc = this.session.pc;
    let busy = false;
    const poll = async () => {
      if (busy) return;
      busy = true;
      try {
        const { sum, codec } = await rtpSum(pc, 'inbound-rtp', 'video', 'framesDecoded');
        if (codec) this.codec = codec;
        if (sum > this.framesDecoded) {
          this.framesDecoded = sum;
          this.mediaArrived();
          if (stopFirst) { stopFirst(); stopFirst = null; this.every(MEDIA_POLL_MS, poll); }
        }
      } catch { /* closing */ } finally { busy = false; }
    };
    let stopFirst = this.every(FIRST_MEDIA_POLL_MS, poll);
  }

  /** Frames stopped while video packets still arrive (loss that was not repaired, a
   * keyframe that never came): the silence check counts packets and misses it. The
   * browser asks for keyframes (PLI) itself; after `stallMs` it is a fault. */
  _watchFrames(stallMs) {
    const pc = this.session.pc;
    let frames = -1;
    let packets = -1;
    let lastFrameAt = now();
    let lastPacketAt = lastFrameAt;
    let busy = false;
    const stop = this.every(Math.max(20, stallMs / 10), async () => {
      if (busy) return;
      busy = true;
      try {
        let f = 0;
        let p = 0;
        (await pc.getStats()).forEach((s) => {
          if (s.type !== 'inbound-rtp' || s.kind !== 'video') return;
          f += s.framesDecoded || 0;
          p += s.packetsReceived || 0;
        });
        const t = now();
        if (p > packets) lastPacketAt = t;
        if (f > frames || this._inactiveSince !== null) lastFrameAt = t;
        frames = Math.max(frames, f);
        packets = Math.max(packets, p);
        if (lastPacketAt > lastFrameAt && t - lastPacketAt < stallMs / 2 && t - lastFrameAt >= stallMs) {
          stop();
          this.reportFault(FAULTS.FRAMES_STALLED, lastFrameAt);
        }
      } catch { /* closing: its connection state reports it */ } finally { busy = false; }
    });
  }

  _watchSilence(windowMs) {
    this._silence?.stop();
    const pc = this.session.pc;
    const packets = async () => (await rtpSum(pc, 'inbound-rtp', '', 'packetsReceived')).sum;
    this._silence = new StallWatchdog(this, packets, Math.max(20, windowMs / 3), 3, (lastGood) => this._onSilence(lastGood));
    this._silence.paused = this._inactiveSince !== null;
    this._silence.start();
  }

  /** No media. If the node is still heard from, the break is upstream: the node says
   * `inactive` when the publisher goes; wait for that within a longer window. */
  _onSilence(lastGood) {
    const period = this.options.pingPeriodMs;
    const recent = this.events && now() - this.events.lastHeard < 2 * period;
    if (recent && !this._silenceExtended) {
      this._silenceExtended = true;
      this._watchSilence(UPSTREAM_SILENCE_MS);
      return;
    }
    this.reportFault(FAULTS.MEDIA_SILENCE, lastGood);
  }

  _onServerEvent(event, data) {
    const { client } = this;
    if (event === 'inactive') {
      const since = now();
      this._inactiveSince = since;
      if (this._silence) this._silence.paused = true;
      client._emit({ kind: 'stream_event', reason: 'inactive', url: this.url });
      this.after(this.options.inactiveTimeoutMs, () => {
        if (this._inactiveSince === since) this.reportFault(FAULTS.UNPUBLISHED, this.lastMediaAt);
      });
      if (client.urls.length > 1) this._lookForThePublisher(since);
    } else if (event === 'active') {
      this._inactiveSince = null;
      this._silenceExtended = false;
      if (this._silence) this._silence.paused = false;
      client._emit({ kind: 'stream_event', reason: 'active', url: this.url });
    } else if (event === 'reconnect') {
      this.reportFault(data.code === 'draining' ? FAULTS.NODE_DRAINING : FAULTS.RECONNECT, now());
    }
  }

  /** While the stream is inactive here, ask the other nodes whether it is live there:
   * a publisher that restored elsewhere is followed at once (seed 000). */
  _lookForThePublisher(since) {
    const { client } = this;
    const others = client.urls.filter((u) => u !== this.url);
    let busy = false;
    const stop = this.every(MOVED_POLL_MS, async () => {
      if (this._inactiveSince !== since) { stop(); return; }
      if (busy) return;
      busy = true;
      try {
        for (const url of others) {
          let live = false;
          try {
            const res = await fetch(`${url}/api/v1/streams/${encodeURIComponent(client.stream)}`, {
              headers: authHeaders(client.token), signal: AbortSignal.any([this.signal, AbortSignal.timeout(1000)]),
            });
            live = res.status === 200 && (await res.json()).live;
          } catch { live = false; }
          if (live && this._inactiveSince === since) {
            stop();
            this.reportFault(FAULTS.PUBLISHER_MOVED, this.lastMediaAt, url);
            return;
          }
        }
      } finally { busy = false; }
    });
  }

  checkNow() {
    this.events?.check();
    this._silence?.check();
  }

  stats() {
    return { framesDecoded: this.framesDecoded, codec: this.codec, connection: this.session?.pc.connectionState ?? 'new' };
  }

  async close() {
    this.stopBackground();
    if (this.session && this.video && this.video.srcObject === this.session.media) this.video.srcObject = null;
    if (this.session) await this.session.stop();
  }
}

let hlsModule = null;

/** hls.js (ES module build) from `url`, loaded once. */
async function loadHls(url) {
  hlsModule ??= import(url).then((m) => m.default).catch((err) => { hlsModule = null; throw err; });
  return hlsModule;
}

function mediaSourceSupported() {
  return Boolean(globalThis.MediaSource || globalThis.ManagedMediaSource);
}

function nativeHls(video) {
  return Boolean(video?.canPlayType?.('application/vnd.apple.mpegurl'));
}

/** HLS playback: hls.js where Media Source Extensions exist, native HLS where only it does. */
class HlsAttempt extends Attempt {
  constructor(client, url, video) {
    super(client, url);
    this.transport = 'hls';
    this.video = video;
    this.hls = null;
    this.framesDecoded = 0;
    this.engine = null;  // 'hls.js' | 'native'
  }

  async open() {
    const { client, video } = this;
    const src = new URL(`${this.url}/hls/${encodeURIComponent(client.stream)}/index.m3u8`, location.href).href;
    video.srcObject = null;
    let Hls = null;
    if (mediaSourceSupported()) {
      Hls = await loadHls(this.options.hlsJsUrl);
      if (!Hls.isSupported()) Hls = null;
    }
    if (this.signal.aborted) throw new Error('attempt closed');
    if (Hls) {
      this.engine = 'hls.js';
      const token = client.token;
      this.hls = new Hls({
        lowLatencyMode: this.options.hlsLowLatency, liveDurationInfinity: true,
        xhrSetup: token ? (xhr) => xhr.setRequestHeader('Authorization', `Bearer ${token}`) : undefined,
      });
      this.hls.on(Hls.Events.ERROR, (_e, data) => {
        if (data.fatal) this.reportFault(FAULTS.HLS_ERROR, this.lastMediaAt);
      });
      this.hls.loadSource(src);
      this.hls.attachMedia(video);
    } else if (nativeHls(video)) {
      this.engine = 'native';
      video.src = src;
      video.addEventListener('error', () => this.reportFault(FAULTS.HLS_ERROR, this.lastMediaAt), { signal: this.signal });
    } else {
      throw new UnbrokenError('this browser plays no HLS');
    }
    video.muted = video.muted || !client.audible;
    video.play().catch(() => {});
    let lastTime = -1;
    let lastMove = now();
    this.every(MEDIA_POLL_MS, () => {
      const q = video.getVideoPlaybackQuality?.();
      const frames = q ? q.totalVideoFrames : 0;
      if (video.currentTime > lastTime && video.readyState >= 2) {
        lastTime = video.currentTime;
        lastMove = now();
        this.framesDecoded = Math.max(this.framesDecoded, frames);
        this.mediaArrived();
      } else if (this.firstMediaAt !== null && now() - lastMove > Math.max(HLS_STALL_MS, this.options.mediaSilenceMs)) {
        this.reportFault(FAULTS.MEDIA_SILENCE, lastMove);
      }
    });
  }

  stats() { return { framesDecoded: this.framesDecoded, engine: this.engine, latency: this.hls?.latency ?? null }; }

  async close() {
    this.stopBackground();
    if (this.hls) { this.hls.destroy(); this.hls = null; }
    if (this.engine === 'native' && this.video.src) { this.video.removeAttribute('src'); this.video.load(); }
  }
}

/**
 * Plays a stream into a <video> from the first URL that has it, and restores playback by
 * itself (seed 000): WHEP, or HLS where WebRTC fails `transportFailures` times in a row,
 * and back to WHEP (make-before-break) when it works again.
 *
 * @example
 * const sub = new Subscriber({ urls: [...], stream: 'cam1', video, transports: ['whep', 'hls'] });
 * sub.on('restored', (r) => console.log(r.fault, r.gapMs)); await sub.start();
 */
export class Subscriber extends RestoringClient {
  static role = 'subscriber';
  static liveState = 'PLAYING';
  static stoppedState = 'STOPPED';

  /**
   * @param {object} o
   * @param {string[]|string} o.urls  node or manager base URLs ('' = this page's origin), in order
   * @param {string} o.stream         stream name
   * @param {HTMLVideoElement} [o.video]  where to play (default: a new muted <video>, not in the page)
   * @param {string[]} [o.transports=['whep']]  'whep' and/or 'hls', first preferred; those
   *   this browser cannot do are left out
   * @param {string} [o.token]        bearer token
   * @param {boolean} [o.audible=false]  HLS: unmute the video (autoplay may then need a gesture)
   * @param {RTCIceServer[]} [o.iceServers=[]]
   * and every restore option (RESTORE_DEFAULTS, BROWSER_DEFAULTS)
   */
  constructor({ video, iceServers = [], audible = false, ...rest }) {
    super(rest);
    this.video = video || Object.assign(document.createElement('video'), { muted: true, playsInline: true });
    this.iceServers = iceServers;
    this.audible = audible;
    const usable = this.options.transports.filter((t) => (t === 'whep'
      ? typeof RTCPeerConnection === 'function'
      : mediaSourceSupported() || nativeHls(this.video)));
    if (usable.length) this.options.transports = usable;
    this.transport = this.options.transports[0];
    this._failures = Object.fromEntries(this.options.transports.map((t) => [t, 0]));
  }

  _newAttempt(url, transport = this.transport, video = this.video) {
    if (transport === 'whep' && video === this.video && this._makeBeforeBreak) video = this._hiddenVideo();
    return transport === 'hls' ? new HlsAttempt(this, url, video) : new PlayAttempt(this, url, video);
  }

  /** Where a make-before-break attempt plays until it takes over the visible <video>. */
  _hiddenVideo() {
    if (!this._hidden) {
      this._hidden = Object.assign(document.createElement('video'), { muted: true, playsInline: true, autoplay: true });
      this._hidden.style.cssText = 'position:fixed;left:0;top:0;width:2px;height:2px;opacity:0;pointer-events:none';
      document.body.append(this._hidden);
    }
    return this._hidden;
  }

  /** Drain: the new session played into a hidden <video>; it takes over the visible one
   * now (the old one showed frames until this moment), then the old session ends. */
  _handover(old, next) {
    const hidden = this._hidden;
    this._hidden = null;
    if (next && hidden && next.video === hidden) {
      const media = hidden.srcObject;
      hidden.srcObject = null;
      next.video = this.video;
      this.video.srcObject = media;
      this.video.play().catch(() => {});
    }
    hidden?.remove();
    super._handover(old, next);
  }

  _attemptFailed(attempt, err) {
    if (this._stopping || NOT_LIVE.includes(err?.status)) return;
    const t = attempt.transport;
    this._failures[t] = (this._failures[t] || 0) + 1;
    const { transports, transportFailures } = this.options;
    if (t === this.transport && transports.length > 1 && this._failures[t] >= transportFailures) {
      this._failures[t] = 0;
      const following = transports[(transports.indexOf(t) + 1) % transports.length];
      this._setTransport(following, `${t} failed ${transportFailures} times`);
    }
  }

  _established(attempt) {
    super._established(attempt);
    this._failures[attempt.transport] = 0;
    if (this.options.transports.length > 1 && this.options.transportProbeMs) {
      const t = setInterval(() => this._probePreferred(), this.options.transportProbeMs);
      this._unwatch.push(() => clearInterval(t));
    }
  }

  _setTransport(transport, why) {
    if (transport !== this.transport) {
      this.transport = transport;
      this._emit({ kind: 'transport', state: transport, reason: why, url: this.url });
    }
  }

  _reportExtra() { return { transport: this.attempt?.transport ?? this.transport }; }

  /** While on a fallback transport, try the preferred one; move back once it plays. */
  async _probePreferred() {
    const preferred = this.options.transports[0];
    const current = this.attempt;
    if (this._probing || this._stopping || this.state !== 'PLAYING' || current?.transport === preferred) return;
    this._probing = true;
    await this.switchTransport(preferred).catch(() => {});
    this._probing = false;
  }

  /**
   * Move playback to `transport` now, make-before-break: the new session plays into a
   * hidden <video> until it delivers frames, then takes over the visible one.
   * @returns {Promise<boolean>} false if it did not play (playback stays where it was)
   */
  async switchTransport(transport) {
    if (!this.options.transports.includes(transport)) throw new RangeError(`${transport} is not in transports`);
    const old = this.attempt;
    if (!old || old.transport === transport) return transport === this.transport;
    const hidden = transport === 'whep'
      ? Object.assign(document.createElement('video'), { muted: true, playsInline: true, autoplay: true })
      : this.video;
    if (transport === 'whep') {
      hidden.style.cssText = 'position:fixed;left:0;top:0;width:2px;height:2px;opacity:0;pointer-events:none';
      document.body.append(hidden);
    }
    const next = this._newAttempt(old.url, transport, hidden);
    try {
      await withTimeout(next.open(), this.options.connectTimeoutS * 1000, 'switch');
      await next.waitMedia(this.options.connectTimeoutS * 1000);
    } catch (err) {
      this._closeInBackground(next);
      hidden !== this.video && hidden.remove();
      this._emit({ kind: 'transport_probe', state: transport, reason: String(err?.message || err).slice(0, 200), url: old.url });
      return false;
    }
    if (this._stopping || this.attempt !== old || old.fault) {
      this._closeInBackground(next);
      hidden !== this.video && hidden.remove();
      return false;
    }
    if (hidden !== this.video) {
      const media = hidden.srcObject;
      hidden.srcObject = null;
      hidden.remove();
      next.video = this.video;
      await old.close();
      this.video.srcObject = media;
      this.video.play().catch(() => {});
    } else {
      this._closeInBackground(old);
    }
    this._failures[transport] = 0;
    this._swapAttempt(next);
    this._setTransport(transport, 'switched');
    return true;
  }

  /** {state, url, transport, restores, tries, framesDecoded, codec, connection | engine, latency} */
  stats() {
    const a = this.attempt;
    return { state: this.state, url: this.url, transport: a?.transport ?? this.transport,
      restores: this.restores.length, tries: this.tries, ...(a ? a.stats() : {}) };
  }
}
