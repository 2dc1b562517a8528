// The benchmark's noVNC page: one RFB client, configured from the query string as the peer
// under test configures it, and instrumented to time when pixels reach the canvas.
import RFB from "./vendor/novnc/core/rfb.js";

const q = new URLSearchParams(location.search);
const proto = location.protocol === "https:" ? "wss:" : "ws:";
const url = `${proto}//${location.host}${q.get("path")}`;
const opts = { shared: true };
if (q.get("password")) opts.credentials = { password: q.get("password") };
const rfb = new RFB(document.getElementById("screen"), url, opts);
rfb.scaleViewport = false;
rfb.resizeSession = false;

const bench = { connected: false, flips: [], inputs: [], levels: [], error: null };
window.bench = bench;
// Rectangles decoded, by encoding: which path the server took.
bench.encodings = {};
for (const [encoding, decoder] of Object.entries(rfb._decoders)) {
  const decode = decoder.decodeRect.bind(decoder);
  decoder.decodeRect = (...args) => {
    const done = decode(...args);
    if (done) bench.encodings[encoding] = (bench.encodings[encoding] || 0) + 1;
    return done;
  };
}

if (q.get("tuned") === "1") {
  // visa's own link adaptation, exactly as the desktop page uses it.
  const { tuneForLink } = await import(`./${q.get("link") ?? "js"}/desktop-link.js`);
  const tuner = tuneForLink(rfb);
  tuner.onchange = (levels) => bench.levels.push([performance.now(), levels.quality, levels.compression]);
  bench.tuner = tuner;
} else {
  rfb.qualityLevel = Number(q.get("quality") ?? 6);
  rfb.compressionLevel = Number(q.get("compression") ?? 2);
}

// A flip is when noVNC copies what it decoded onto the visible canvas: record when, and how
// many pixels changed. flip() called while drawing is queued only queues itself.
const display = rfb._display;
const flip = display.flip.bind(display);
display.flip = (fromQueue) => {
  const real = fromQueue || display._renderQ.length === 0;
  const d = display._damageBounds;
  const area = Math.max(0, d.right - d.left) * Math.max(0, d.bottom - d.top);
  const out = flip(fromQueue);
  if (real && area > 0) {
    bench.flips.push([performance.now(), area]);
    if (bench.marker) readFrame(bench.marker);
    const w = bench.watch;
    if (w && w.base !== null && w.hit === null && sample(w) !== w.base) w.hit = performance.now();
  }
  return out;
};
// A frame source's window carries each frame's number in a marker at its top-left corner
// (bench/framesource.py): 16 cells of 16x16 pixels, white for a one, and below them the same
// inverted. A frame delivered is a new number painted; a torn marker reads as none.
bench.startMarker = (x, y) => { bench.marker = { x, y, seen: new Set(), frames: 0, last: null }; };
function readFrame(marker) {
  const data = display._targetCtx.getImageData(marker.x, marker.y, 256, 32).data;
  let n = 0;
  for (let bit = 0; bit < 16; bit++) {
    const at = (y) => { const i = (y * 256 + bit * 16 + 8) * 4; return data[i] + data[i + 1] + data[i + 2] > 384; };
    const top = at(8);
    if (top === at(24)) return;
    n = (n << 1) | (top ? 1 : 0);
  }
  marker.last = n;
  if (!marker.seen.has(n)) { marker.seen.add(n); marker.frames += 1; }
  const c = bench.capture;
  const now = performance.now();
  if (c && c.shots.length < c.want && now - c.last >= c.every) {
    // The painted frame, whole, as PNG: compared with the server's frame of this number.
    c.last = now;
    const crop = document.createElement("canvas");
    crop.width = 1024; crop.height = 768;
    crop.getContext("2d").drawImage(display._targetCtx.canvas, -marker.x, -marker.y);
    c.shots.push([n, crop.toDataURL("image/png")]);
  }
}
// Typing is timed on the terminal's line only (other windows may be painting meanwhile):
// its pixels when the key goes down, then the first flip that changes them.
function sample(w) {
  const data = display._targetCtx.getImageData(w.x, w.y, w.w, w.h).data;
  let h = 0;
  for (let i = 0; i < data.length; i += 4) h = (Math.imul(h, 31) + data[i] + (data[i + 1] << 8) + (data[i + 2] << 16)) | 0;
  return h;
}
window.addEventListener("keydown", () => {
  const w = bench.watch;
  if (w) { w.base = sample(w); w.t = performance.now(); w.hit = null; }
}, true);
for (const kind of ["keydown", "mousemove", "mousedown"]) {
  window.addEventListener(kind, () => bench.inputs.push([performance.now(), kind]), true);
}
rfb.addEventListener("connect", () => { bench.connected = true; rfb.focus(); });
rfb.addEventListener("disconnect", (ev) => { bench.connected = false; bench.error = bench.error || `disconnected clean=${ev.detail.clean}`; });
rfb.addEventListener("securityfailure", (ev) => { bench.error = `security failure: ${ev.detail.reason}`; });
bench.rfb = rfb;
