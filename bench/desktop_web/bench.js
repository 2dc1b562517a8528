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

if (q.get("tuned") === "1") {
  // visa's own link adaptation, exactly as the desktop page uses it.
  const { tuneForLink } = await import("./js/desktop-link.js");
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
    if (bench.marker) countFrame(bench.marker);
    const w = bench.watch;
    if (w && w.base !== null && w.hit === null && sample(w) !== w.base) w.hit = performance.now();
  }
  return out;
};
// The animation paints a grey marker whose level changes with every frame it draws: a frame
// delivered is a change of the marker's colour (JPEG moves colours a little, levels are far apart).
function countFrame(marker) {
  const [r, g, b] = display._targetCtx.getImageData(marker.x, marker.y, 1, 1).data;
  const v = (r + g + b) / 3;
  if (marker.last === null || Math.abs(v - marker.last) > 14) {
    if (marker.last !== null) marker.frames += 1;
    marker.last = v;
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
