// unbroken browser SDK: the browser twin of the Python SDK (unbroken/client/).
// ES module, no build step. Served by the node at /web/unbroken.js.
//
//   import { Publisher, Subscriber } from '/web/unbroken.js';
//   const pub = new Publisher({ urls: [''], stream: 'cam1', codec: 'h264', mediaStream });
//   const sub = new Subscriber({ urls: [''], stream: 'cam1', video: videoElement });
//   sub.on('restored', (report) => console.log(report.fault, report.restoreMs));
//   await pub.start(); await sub.start(); sub.stats(); await sub.stop(); await pub.stop();
//
// Publisher and Subscriber restore by themselves (restore.js, client.js); publish() and
// play() below are the plain one-session primitives they use.
// A URL is the node's (or manager's) base URL; '' means this page's origin.

const GATHER_TIMEOUT_MS = 2000;
const DELETE_TIMEOUT_MS = 2000;  // ending a session never waits long on a dead node
/** The server-sent events extension (draft-ietf-wish-whep), as the node offers it. */
export const SSE_REL = 'urn:ietf:params:whep:ext:core:server-sent-events';

/** Error thrown when the server does not answer 201: carries `status`, `reason`, `retryAfter`. */
export class UnbrokenError extends Error {
  constructor(message, { status = 0, reason = '', retryAfter = null } = {}) {
    super(message);
    this.name = 'UnbrokenError';
    this.status = status;
    this.reason = reason;
    this.retryAfter = retryAfter;
  }
}

function endpoint(url, kind, stream, query = {}) {
  const base = (url || '').replace(/\/+$/, '');
  const absolute = new URL(`${base}/${kind}/${encodeURIComponent(stream)}`,
    globalThis.location ? globalThis.location.href : undefined);
  for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) absolute.searchParams.set(k, v);
  return absolute.href;
}

function waitIceGathering(pc, timeoutMs = GATHER_TIMEOUT_MS) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    // Without STUN/TURN servers gathering is quick; if a server hangs, send what we have.
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

async function readReason(res) {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    return String(body.reason ?? body.error ?? body.message ?? text);
  } catch {
    return text.trim();
  }
}

// Offer → POST (WHIP/WHEP, no trickle) → answer. Returns {location, events} as absolute
// URLs (events: the server-sent events offered in the Link header, or null), and
// `proxied`: the answer came through a proxy (a `Via` header: the stream manager), so the
// node may outlive a broken path to it (restore.js re-attaches the events then).
async function negotiate(pc, url, token, signal) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceGathering(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp, signal });
  if (res.status !== 201) {
    const reason = await readReason(res);
    const retry = res.headers.get('Retry-After');
    throw new UnbrokenError(`POST ${url}: ${res.status} ${reason || res.statusText}`, {
      status: res.status, reason, retryAfter: retry === null ? null : Number(retry),
    });
  }
  const answer = await res.text();
  const loc = res.headers.get('Location');
  const events = eventsLink(res.headers.get('Link'));
  const proxied = res.headers.has('Via');  // cross-origin: exposed by the CORS headers
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return { location: loc ? new URL(loc, url).href : null, events: events ? new URL(events, url).href : null,
    proxied };
}

/** The server-sent events URL in a Link header (rel SSE_REL), or null. */
export function eventsLink(header) {
  if (!header) return null;
  for (const m of header.matchAll(/<([^>]*)>([^<]*)/g)) {
    if (m[2].replace(/\s/g, '').includes(`rel="${SSE_REL}"`)) return m[1];
  }
  return null;
}

function session(pc, { location, events, proxied }, token, cleanup = () => {}) {
  let stopped = false;
  return {
    pc,
    location,
    events,
    proxied,
    async stop() {
      if (stopped) return;
      stopped = true;
      cleanup();
      pc.close();
      if (location) {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        await fetch(location, { method: 'DELETE', headers, signal: AbortSignal.timeout(DELETE_TIMEOUT_MS) })
          .catch(() => {});
      }
    },
  };
}

/**
 * Order the codec capabilities so that `name` ('h264' | 'vp8' | ...) is offered alone
 * (plus retransmission). H264: packetization-mode=1 first, constrained baseline first.
 */
export function codecPreferences(name, kind = 'video') {
  const caps = RTCRtpReceiver.getCapabilities(kind);
  if (!caps) return [];
  const mime = `${kind}/${name}`.toLowerCase();
  const score = (c) => {
    const f = c.sdpFmtpLine || '';
    let s = 0;
    if (!/packetization-mode=1/.test(f)) s += 2;
    if (!/profile-level-id=42e0/.test(f)) s += 1;
    return s;
  };
  const wanted = caps.codecs
    .filter((c) => c.mimeType.toLowerCase() === mime)
    .sort((a, b) => score(a) - score(b));
  if (!wanted.length) throw new UnbrokenError(`codec ${name} is not supported by this browser`);
  const rtx = caps.codecs.filter((c) => c.mimeType.toLowerCase() === `${kind}/rtx`);
  return [...wanted, ...rtx];
}

/**
 * Publish over WHIP.
 * @param {object} o
 * @param {string} [o.url]        base URL of the node ('' = this origin)
 * @param {string} o.stream       stream name
 * @param {string} [o.token]      bearer token
 * @param {MediaStream|MediaStreamConstraints} [o.media]  what to send (default camera + mic)
 * @param {'h264'|'vp8'} [o.videoCodec]
 * @param {RTCIceServer[]} [o.iceServers]
 * @param {string} [o.replaces]   id of our previous session on this stream (take over at once)
 * @param {AbortSignal} [o.signal]
 * @returns {Promise<{pc: RTCPeerConnection, location: string, events: string|null, proxied: boolean, media: MediaStream, stop(): Promise<void>}>}
 */
export async function publish({ url, stream, token, media, videoCodec, iceServers = [], replaces, signal }) {
  const own = !(media instanceof MediaStream);
  const ms = own
    ? await navigator.mediaDevices.getUserMedia(media || { video: true, audio: true })
    : media;
  const stopTracks = () => { if (own) ms.getTracks().forEach((t) => t.stop()); };
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  try {
    for (const track of ms.getTracks()) {
      const tr = pc.addTransceiver(track, { direction: 'sendonly', streams: [ms] });
      if (track.kind === 'video' && videoCodec) tr.setCodecPreferences(codecPreferences(videoCodec));
    }
    const links = await negotiate(pc, endpoint(url, 'whip', stream, { replaces }), token, signal);
    const s = session(pc, links, token, stopTracks);
    s.media = ms;
    return s;
  } catch (err) {
    pc.close();
    stopTracks();
    throw err;
  }
}

/**
 * Play over WHEP; the received MediaStream is attached to `video` (if given).
 * Rejects with an UnbrokenError (status 409, retryAfter) when the stream is not live
 * (after `waitLiveMs`, if given: the node holds the POST that long for a publisher).
 * @returns {Promise<{pc: RTCPeerConnection, location: string, events: string|null, proxied: boolean, media: MediaStream, stop(): Promise<void>}>}
 */
export async function play({ url, stream, token, video, iceServers = [], waitLiveMs, signal }) {
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  const ms = new MediaStream();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  pc.addEventListener('track', (ev) => {
    ms.addTrack(ev.track);
    if (video && video.srcObject !== ms) {
      video.srcObject = ms;
      video.playsInline = true;
      video.autoplay = true;
      video.play().catch(() => {}); // autoplay with sound may need a user gesture
    }
  });
  try {
    const links = await negotiate(pc, endpoint(url, 'whep', stream, { wait_live_ms: waitLiveMs }), token, signal);
    const s = session(pc, links, token, () => { if (video && video.srcObject === ms) video.srcObject = null; });
    s.media = ms;
    return s;
  } catch (err) {
    pc.close();
    throw err;
  }
}

/**
 * Video numbers from getStats: {framesDecoded, framesSent, framesPerSecond, bytes, codec,
 * frameWidth, frameHeight}, from inbound-rtp (playing) or outbound-rtp (publishing).
 */
export async function videoStats(pc) {
  const report = await pc.getStats();
  const out = { framesDecoded: 0, framesSent: 0, framesPerSecond: 0, bytes: 0, codec: null,
    frameWidth: 0, frameHeight: 0 };
  report.forEach((s) => {
    if (s.kind !== 'video' || (s.type !== 'inbound-rtp' && s.type !== 'outbound-rtp')) return;
    out.framesDecoded += s.framesDecoded || 0;
    out.framesSent += s.framesSent || 0;
    out.framesPerSecond = s.framesPerSecond || out.framesPerSecond;
    out.bytes += (s.type === 'inbound-rtp' ? s.bytesReceived : s.bytesSent) || 0;
    out.frameWidth = s.frameWidth || out.frameWidth;
    out.frameHeight = s.frameHeight || out.frameHeight;
    const codec = s.codecId && report.get(s.codecId);
    if (codec) out.codec = codec.mimeType.split('/')[1].toLowerCase();
  });
  return out;
}

export * from './client.js';
