// Read the 16-bit frame counter drawn by unbroken's Python test source
// (unbroken.client.testsrc): 16 blocks of 32x32 px in a row at the top-left of the frame,
// block i at x = 32*i, y = 0..31, block 0 = most significant bit; white = 1, black = 0.

const BLOCK = 32;
const BITS = 16;
const INNER = 16;                       // sample the inner 16x16 of each block
const MARGIN = (BLOCK - INNER) / 2;

let canvas = null;
let ctx = null;

function context() {
  if (!ctx) {
    canvas = document.createElement('canvas');
    canvas.width = BLOCK * BITS;
    canvas.height = BLOCK;
    ctx = canvas.getContext('2d', { willReadFrequently: true });
  }
  return ctx;
}

/**
 * Mean luma (0..255) of each block's inner 16x16, or null when no frame is available.
 * @param {HTMLVideoElement|HTMLCanvasElement|ImageBitmap|VideoFrame} video
 */
export function readLumas(video) {
  const w = video.videoWidth ?? video.displayWidth ?? video.width;
  const h = video.videoHeight ?? video.displayHeight ?? video.height;
  if (!w || !h || w < BLOCK * BITS || h < BLOCK) return null;
  const c = context();
  // Source rectangle at the video's intrinsic size: pixels map 1:1 onto the canvas.
  c.drawImage(video, 0, 0, BLOCK * BITS, BLOCK, 0, 0, BLOCK * BITS, BLOCK);
  const { data } = c.getImageData(0, 0, BLOCK * BITS, BLOCK);
  const lumas = [];
  for (let i = 0; i < BITS; i++) {
    let sum = 0;
    for (let y = MARGIN; y < MARGIN + INNER; y++) {
      for (let x = BLOCK * i + MARGIN; x < BLOCK * i + MARGIN + INNER; x++) {
        const p = (y * BLOCK * BITS + x) * 4;
        sum += 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
      }
    }
    lumas.push(sum / (INNER * INNER));
  }
  return lumas;
}

/**
 * The frame counter shown by `video`, or null if there is no frame or the code is illegible
 * (a block far from both black and white, e.g. a frame that is not the test pattern).
 * @returns {number|null}
 */
export function readCounter(video) {
  const lumas = readLumas(video);
  if (!lumas) return null;
  let value = 0;
  for (const l of lumas) {
    if (l > 64 && l < 192) return null;
    value = (value << 1) | (l >= 128 ? 1 : 0);
  }
  return value;
}

/**
 * Draw `value` as the 16-bit frame code (the layout readCounter reads) at the top-left.
 * @param {CanvasRenderingContext2D} c
 */
export function drawCounter(c, value) {
  for (let i = 0; i < BITS; i++) {
    const bit = (value >> (BITS - 1 - i)) & 1;
    c.fillStyle = bit ? '#fff' : '#000';
    c.fillRect(BLOCK * i, 0, BLOCK, BLOCK);
  }
}

/**
 * A test source for publishers: a canvas video track showing a frame counter that grows by
 * one per frame (and a moving bar, so encoders always have work), at `fps`. `exact`: every
 * value is exactly one captured frame (requestFrame after each drawing), so a value a
 * viewer never got is a frame lost on the way; otherwise the canvas is captured at `fps`
 * (a value may be skipped there).
 * @returns {{stream: MediaStream, stop(): void, counter(): number}}
 */
export function counterStream({ width = 640, height = 360, fps = 30, exact = false } = {}) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const c = canvas.getContext('2d');
  let n = 0;
  const draw = () => {
    c.fillStyle = '#246';
    c.fillRect(0, 0, width, height);
    c.fillStyle = '#fc3';
    c.fillRect((n * 8) % width, BLOCK + 20, 40, height - BLOCK - 40);
    drawCounter(c, n & 0xffff);
    n += 1;
    if (exact) track.requestFrame();
  };
  const stream = canvas.captureStream(exact ? 0 : fps);
  const [track] = stream.getVideoTracks();
  draw();
  const timer = setInterval(draw, 1000 / fps);
  return {
    stream,
    counter: () => n,
    stop() { clearInterval(timer); stream.getTracks().forEach((t) => t.stop()); },
  };
}
