// How the desktop asks the VNC server to encode: noVNC's JPEG quality and zlib compression
// levels, chosen from the measured link and adapted while the session runs. The figures
// behind the choices: docs/desktop-performance.md (python -m bench.desktop).
//
// * Compression stays low except on a slow, far link: a higher zlib level costs the VNC
//   server CPU on every update (scrolling a terminal took 4x longer at level 6 than at 2)
//   and saves little once the link has a few Mbit/s.
// * Quality follows the picture: a still screen (text, a plot) gets the "still" quality,
//   sharp enough to read; a moving one (an animation, a video, a dragged window) drops to
//   the "motion" quality, whose smaller frames keep up with the link.

// The levels for each round-trip time (ms), still and in motion.
const CLASSES = [
  { maxRtt: 5, still: { quality: 8, compression: 1 }, motion: { quality: 6, compression: 1 } }, // LAN
  { maxRtt: 30, still: { quality: 7, compression: 1 }, motion: { quality: 4, compression: 1 } }, // campus, Wi-Fi
  { maxRtt: 120, still: { quality: 6, compression: 2 }, motion: { quality: 3, compression: 1 } }, // home
  { maxRtt: Infinity, still: { quality: 4, compression: 5 }, motion: { quality: 1, compression: 3 } }, // poor
];
// The stream is "moving" above this many bytes per second, "still" again below the second.
const MOTION_BPS = 150_000;
const STILL_BPS = 40_000;
const WINDOW_MS = 1000;
// The round trip is probed again this often, and the best of the last few probes counts: a
// probe answered while the page was busy decoding reads long, the next ones correct it, and
// a link that got worse (a laptop moving away from the access point) is noticed in a minute.
const PROBE_EVERY_MS = 15_000;
const PROBES_KEPT = 4;

export function levelsFor(rttMs, moving = false) {
  const cls = CLASSES.find((c) => rttMs < c.maxRtt);
  return moving ? cls.motion : cls.still;
}

// The best of a few small same-origin requests: the page's server sits beside the gateway.
async function probeRtt(url, tries = 3) {
  let best = Infinity;
  for (let i = 0; i < tries; i += 1) {
    const start = performance.now();
    try {
      await fetch(url, { method: "HEAD", cache: "no-store", credentials: "same-origin" });
    } catch {
      return null;
    }
    best = Math.min(best, performance.now() - start);
  }
  return best;
}

export function tuneForLink(rfb, { probeUrl = location.href } = {}) {
  const tuner = { rtt: null, moving: false, quality: 6, compression: 2, onchange: null, stop: () => {} };
  const apply = () => {
    if (tuner.rtt === null) return;
    const levels = levelsFor(tuner.rtt, tuner.moving);
    if (levels.quality === tuner.quality && levels.compression === tuner.compression) return;
    tuner.quality = levels.quality;
    tuner.compression = levels.compression;
    rfb.qualityLevel = levels.quality; // noVNC sends new SetEncodings at once
    rfb.compressionLevel = levels.compression;
    tuner.onchange?.(levels);
  };
  rfb.qualityLevel = tuner.quality;
  rfb.compressionLevel = tuner.compression;
  const probes = [];
  const probe = () => probeRtt(probeUrl).then((rtt) => {
    if (rtt === null) return;
    probes.push(rtt);
    if (probes.length > PROBES_KEPT) probes.shift();
    tuner.rtt = Math.min(...probes);
    apply();
  });
  probe();
  const prober = setInterval(probe, PROBE_EVERY_MS);

  // Bytes from the server per second, counted on noVNC's websocket.
  let received = 0;
  let timer = null;
  const count = (ev) => { received += ev.data.byteLength || ev.data.length || 0; };
  rfb.addEventListener("connect", () => {
    const ws = rfb._sock?._websocket; // noVNC 1.7's Websock keeps the WebSocket here
    if (!ws) return;
    ws.addEventListener("message", count);
    timer = setInterval(() => {
      const bps = (received * 1000) / WINDOW_MS;
      received = 0;
      if (!tuner.moving && bps > MOTION_BPS) tuner.moving = true;
      else if (tuner.moving && bps < STILL_BPS) tuner.moving = false;
      else return;
      apply();
    }, WINDOW_MS);
  });
  tuner.stop = () => { clearInterval(timer); clearInterval(prober); };
  rfb.addEventListener("disconnect", () => tuner.stop());
  return tuner;
}
