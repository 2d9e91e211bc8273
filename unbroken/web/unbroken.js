// unbroken browser SDK: WHIP publish / WHEP play with plain RTCPeerConnection + fetch.
// ES module, no build step. Served by the node at /web/unbroken.js.
//
//   import { publish, play } from '/web/unbroken.js';
//   const pub = await publish({ stream: 'cam1', videoCodec: 'h264' });
//   const view = await play({ stream: 'cam1', video: document.querySelector('video') });
//   await view.stop(); await pub.stop();
//
// `url` is the node's (or manager's) base URL; '' or undefined means this page's origin.

const GATHER_TIMEOUT_MS = 2000;

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

function endpoint(url, kind, stream) {
  const base = (url || '').replace(/\/+$/, '');
  const absolute = new URL(`${base}/${kind}/${encodeURIComponent(stream)}`,
    globalThis.location ? globalThis.location.href : undefined);
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

// Offer → POST (WHIP/WHEP, no trickle) → answer. Returns the absolute session URL.
async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitIceGathering(pc);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  if (res.status !== 201) {
    const reason = await readReason(res);
    const retry = res.headers.get('Retry-After');
    throw new UnbrokenError(`POST ${url}: ${res.status} ${reason || res.statusText}`, {
      status: res.status, reason, retryAfter: retry === null ? null : Number(retry),
    });
  }
  const answer = await res.text();
  const loc = res.headers.get('Location');
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return loc ? new URL(loc, url).href : null;
}

function session(pc, location, token, cleanup = () => {}) {
  let stopped = false;
  return {
    pc,
    location,
    async stop() {
      if (stopped) return;
      stopped = true;
      cleanup();
      pc.close();
      if (location) {
        const headers = token ? { Authorization: `Bearer ${token}` } : {};
        await fetch(location, { method: 'DELETE', headers }).catch(() => {});
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
 * @returns {Promise<{pc: RTCPeerConnection, location: string, media: MediaStream, stop(): Promise<void>}>}
 */
export async function publish({ url, stream, token, media, videoCodec, iceServers = [] }) {
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
    const location = await negotiate(pc, endpoint(url, 'whip', stream), token);
    const s = session(pc, location, token, stopTracks);
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
 * Rejects with an UnbrokenError (status 409, retryAfter) when the stream is not live.
 * @returns {Promise<{pc: RTCPeerConnection, location: string, media: MediaStream, stop(): Promise<void>}>}
 */
export async function play({ url, stream, token, video, iceServers = [] }) {
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
    const location = await negotiate(pc, endpoint(url, 'whep', stream), token);
    const s = session(pc, location, token, () => { if (video && video.srcObject === ms) video.srcObject = null; });
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
