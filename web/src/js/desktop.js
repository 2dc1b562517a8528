// The desktop: noVNC's RFB client on a one-time gateway URL. The gateway checks the token
// and does the VNC authentication itself, so no password ever reaches the browser.
import RFB from "../vendor/novnc/core/rfb.js";
import { encodingName } from "../vendor/novnc/core/encodings.js";
import { supportsWebCodecsH264Decode } from "../vendor/novnc/core/util/browser.js";
import { api, ApiError, onEvent, toast } from "./app.js";
import { offerableUrl } from "./clipboard-url.js";
import { tuneForLink } from "./desktop-link.js";

const bar = document.getElementById("desktop");
const uid = bar.dataset.uid;
const screen = document.getElementById("screen");
const statusEl = document.getElementById("status");
const overlay = document.getElementById("overlay");
const overlayText = document.getElementById("overlay-text");
const scaleBtn = document.getElementById("btn-scale");
const clipBtn = document.getElementById("btn-clipboard");
const clipPanel = document.getElementById("clipboard-panel");
const clipText = document.getElementById("clipboard-text");
const reconnectBtn = document.getElementById("btn-reconnect");
const cadBtn = document.getElementById("btn-cad");
const openLink = document.getElementById("clipboard-open");
const urlHosts = JSON.parse(bar.dataset.urlHosts || "[]");
const urlMax = Number(bar.dataset.urlMax) || 2048;

const THUMB_FIRST_MS = 10_000;
const THUMB_EVERY_MS = 60_000;
const THUMB_W = 340, THUMB_H = 240;

let rfb = null;
let session = null; // the answer of /connect: url, view_only, role
let leaving = false; // the page is being left: a closing socket is not a lost one
let thumbTimers = [];
let scaling = localStorage.getItem("visa.desktop.scale") === "1";

function setStatus(text, state) {
  statusEl.textContent = text;
  document.body.dataset.desktop = state; // read by tests and styles
}

function showOverlay(text) {
  overlayText.textContent = text;
  overlay.classList.toggle("hidden", !text);
}

function applyViewMode() {
  if (!rfb) return;
  // The owner's window decides the remote screen size; others scale what they are shown.
  const owner = session?.role === "OWNER";
  rfb.scaleViewport = scaling || !owner;
  rfb.resizeSession = owner && !scaling && !session.view_only;
  scaleBtn.setAttribute("aria-pressed", String(rfb.scaleViewport));
}

async function connect() {
  reconnectBtn.classList.add("hidden");
  const again = reconnect.attempt > 0;
  if (!again) {
    showOverlay("");
    setStatus("Connecting…", "connecting");
  }
  try {
    session = await api("POST", `/api/instances/${uid}/connect`);
  } catch (err) {
    if (err instanceof ApiError && err.body.error === "waiting_for_owner") {
      waitForOwner();
      return;
    }
    if (again && retryable(err)) {
      scheduleReconnect();
      return;
    }
    reconnectDone();
    setStatus("Not connected", "failed");
    showOverlay(err.message);
    reconnectBtn.classList.remove("hidden");
    return;
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = /^wss?:/.test(session.url) ? session.url : `${proto}//${location.host}${session.url}`;
  // The socket is made here to read how the gateway closed it: with code 1011 its reason is a
  // fixed text of visa's saying why the machine ended the connection (an RDP login refused...).
  const socket = new WebSocket(url);
  let gatewayReason = "";
  socket.addEventListener("close", (ev) => { if (ev.code === 1011) gatewayReason = ev.reason || ""; });
  rfb = new RFB(screen, socket, { shared: true });
  rfb.viewOnly = !!session.view_only;
  rfb.focusOnClick = true;
  rfb.background = "#0f141b";
  // JPEG quality and compression from the measured link, adapted to what the screen shows.
  tuneForLink(rfb, { probeUrl: "/health" });
  watchEncodings(rfb);
  applyViewMode();
  const role = (session.role || "").toLowerCase();
  document.getElementById("role-badge").textContent = session.view_only ? `${role} · view only` : role;
  cadBtn.disabled = !!session.view_only;

  rfb.addEventListener("connect", () => {
    reconnect.everUp = true;
    reconnectDone();
    showOverlay("");
    setStatus(session.view_only ? "Connected · view only" : "Connected", "connected");
    if (!session.view_only) rfb.focus();
    if (session.role === "OWNER") scheduleThumbnails();
    watchPrinted(true);
  });
  rfb.addEventListener("disconnect", (ev) => {
    stopThumbnails();
    watchPrinted(false);
    rfb = null;
    if (gatewayReason) {
      reconnect.refused = true; // the machine said why: trying again would not change it
      reconnectDone();
      setStatus("Disconnected", "failed");
      showOverlay(`The desktop closed the connection: ${gatewayReason}.`);
      reconnectBtn.classList.remove("hidden");
      return;
    }
    if (lostSocket()) return;
    const clean = ev.detail && ev.detail.clean;
    setStatus("Disconnected", "disconnected");
    showOverlay(!reconnect.everUp ? "The desktop does not answer: try again in a moment."
      : clean ? "The desktop connection was closed." : "The connection to the desktop was lost.");
    reconnectBtn.classList.remove("hidden");
  });
  rfb.addEventListener("credentialsrequired", () => {
    // The gateway answers the VNC challenge; being asked means it could not (nor would it again).
    reconnect.refused = true;
    setStatus("Authentication failed", "failed");
    rfb.disconnect();
  });
  rfb.addEventListener("securityfailure", (ev) => {
    reconnect.refused = true; // the desktop said no: trying again would not change it
    setStatus("Refused", "failed");
    showOverlay(`The desktop refused the connection${ev.detail?.reason ? `: ${ev.detail.reason}` : ""}.`);
  });
  rfb.addEventListener("clipboard", (ev) => {
    clipText.value = ev.detail.text;
    offerLink(ev.detail.text);
    // Also to the local clipboard where the browser allows it (secure context, focused page).
    navigator.clipboard?.writeText(ev.detail.text).catch(() => {});
  });
  rfb.addEventListener("desktopname", (ev) => { document.title = `${ev.detail.name} · VISA`; });
}

// --- the encoding the pictures arrive in, for tests and support: body[data-encoding] is the one
// that decoded the most pixels in the last second ("H.264" while something moves and the desktop
// streams it as video, a lossless one once the screen rests), kept while nothing arrives;
// body[data-video] says whether this browser decodes H.264 (WebCodecs), so noVNC offers it. ---
const ENCODING_WINDOW_MS = 1000;
let decodedRecently = []; // [time, encoding name, pixels] of each rectangle decoded
document.body.dataset.video = supportsWebCodecsH264Decode ? "h264" : "none";

function watchEncodings(client) {
  // noVNC keeps its decoders by encoding number (no public hook): each is wrapped to count.
  for (const [number, decoder] of Object.entries(client._decoders || {})) {
    const name = encodingName(Number(number));
    const decode = decoder.decodeRect.bind(decoder);
    decoder.decodeRect = (...args) => {
      const done = decode(...args);
      if (done) decodedRecently.push([performance.now(), name, args[2] * args[3]]);
      return done;
    };
  }
}

setInterval(() => {
  const since = performance.now() - ENCODING_WINDOW_MS;
  decodedRecently = decodedRecently.filter(([at]) => at >= since);
  if (!decodedRecently.length) return;
  const counts = new Map();
  for (const [, name, pixels] of decodedRecently) counts.set(name, (counts.get(name) || 0) + pixels);
  const [top] = [...counts].reduce((a, b) => (b[1] > a[1] ? b : a));
  if (document.body.dataset.encoding !== top) document.body.dataset.encoding = top;
}, 250);

// A URL copied in the desktop, on the allow-list: one click opens it here, in a new tab that
// knows nothing of this page (noopener noreferrer). Anything else is not offered.
function offerLink(text) {
  const href = offerableUrl(text, urlHosts, urlMax);
  openLink.classList.toggle("hidden", !href);
  openLink.href = href || "#";
  openLink.textContent = href ? `Open ${href}` : "";
  openLink.title = href || "";
  document.body.dataset.clipboardUrl = href ? "offered" : "none"; // read by tests
}
openLink.addEventListener("click", () => { setTimeout(() => offerLink(""), 0); });

// --- printed: a print inside the machine lands as a PDF in the owner's ~/PDF; each one that
// appears while this page is open is offered for download here. Names are the machine's: text
// only, never markup, and the link is visa's own download URL. ----------------------------------
const PRINTED_EVERY_MS = 5000;
const printedEl = document.getElementById("printed");
let printedSeen = null; // name -> modified, as first listed: what was there before is not news
let printedTimer = null;
let printedRun = 0; // which watch a poll belongs to: one that outlived its watch stops

// Polled while the desktop is connected and this page is seen: a machine that cannot be listed
// says so in the answer (unavailable), and is asked again at the next turn.
async function pollPrinted(run) {
  printedTimer = null;
  if (document.visibilityState === "visible") {
    let listing;
    try {
      listing = await api("GET", `/api/instances/${uid}/printed`);
    } catch (err) {
      console.warn("printed PDFs not listed", err);
      return; // refused (no longer a member, logged out): not again
    }
    if (run !== printedRun) return; // disconnected meanwhile: connecting again starts over
    if (listing.unavailable) {
      // Nothing to compare with: the files are not reachable now.
    } else if (printedSeen === null) {
      printedSeen = new Map(listing.files.map((f) => [f.name, f.modified]));
      document.body.dataset.printed = "watching"; // read by tests
    } else {
      showPrinted(listing.files.filter((f) => printedSeen.get(f.name) !== f.modified));
    }
  }
  printedTimer = setTimeout(pollPrinted, PRINTED_EVERY_MS, run);
}

function watchPrinted(on) {
  clearTimeout(printedTimer);
  printedTimer = null;
  printedRun += 1;
  if (on && bar.dataset.files === "true") printedTimer = setTimeout(pollPrinted, 0, printedRun);
}

function showPrinted(files) {
  printedEl.replaceChildren();
  for (const f of files.slice(0, 3)) {
    const item = document.createElement(f.downloadable ? "a" : "span");
    item.className = f.downloadable ? "btn small" : "muted";
    item.textContent = f.downloadable ? `Printed: ${f.name}` : `Printed: ${f.name} (too large to download)`;
    item.title = f.path;
    if (f.downloadable) {
      item.href = `/api/instances/${encodeURIComponent(uid)}/files/content?path=${encodeURIComponent(f.path)}`;
      item.setAttribute("download", f.name);
      item.dataset.testid = "printed-link";
    }
    printedEl.append(item);
  }
  printedEl.classList.toggle("hidden", files.length === 0);
}

// --- waiting for the owner: this machine admits its other members only while the owner is
// connected. The owner's arrival comes on the event stream; a slow retry covers a missed one. ---
let ownerTimer = null;
function waitForOwner() {
  reconnectDone();
  setStatus("Waiting for the owner", "waiting");
  showOverlay("Waiting for the owner: the desktop opens as soon as they connect.");
  clearTimeout(ownerTimer);
  ownerTimer = setTimeout(connect, 15000);
}
onEvent("presence", (d) => {
  if (d.uid === uid && d.owner_connected && document.body.dataset.desktop === "waiting") {
    clearTimeout(ownerTimer);
    connect();
  }
});

// --- reconnecting: a socket that drops (a gateway restarted, a network blip) comes back by
// itself with a fresh one-time token; the user sees "Reconnecting…", not a dead screen. -------
// Steps of a second while a restarted gateway comes back (a few seconds), then slower.
const RECONNECT_DELAYS_MS = [250, 500, 1000, 1000, 1000, 1000, 1000, 2000, 2000, 3000, 5000, 10000, 10000, 10000];
const reconnect = { attempt: 0, timer: null, refused: false, everUp: false }; // everUp: this page was connected once

function retryable(err) {
  // The web app or the gateway away (network error, 502/503/504) is worth another try; an
  // answer about the instance (stopped, no longer a member, token refused) is not.
  return !(err instanceof ApiError) || err.status >= 500 || err.status === 429;
}

function lostSocket() {
  // True when the disconnect is handled here: a new attempt is scheduled. A first connection
  // that fails tries again too (a desktop that has only just started, a gateway being
  // restarted): every attempt asks /connect anew, so an answer about the instance ends the tries.
  if (leaving || reconnect.refused) return false;
  return scheduleReconnect();
}

function scheduleReconnect() {
  if (reconnect.attempt >= RECONNECT_DELAYS_MS.length) {
    reconnectDone();
    return false;
  }
  const delay = RECONNECT_DELAYS_MS[reconnect.attempt];
  reconnect.attempt += 1;
  if (reconnect.everUp) {
    setStatus("Reconnecting…", "reconnecting");
    showOverlay("The connection to the desktop was lost: reconnecting…");
  } else {
    setStatus("Connecting…", "connecting");
    showOverlay("The desktop does not answer yet: trying again…");
  }
  clearTimeout(reconnect.timer);
  reconnect.timer = setTimeout(connect, delay);
  return true;
}

function reconnectDone() {
  clearTimeout(reconnect.timer);
  reconnect.timer = null;
  reconnect.attempt = 0;
}

// --- thumbnails: the owner's browser shows the others what the screen looks like ------------
function scheduleThumbnails() {
  stopThumbnails();
  thumbTimers.push(setTimeout(sendThumbnail, THUMB_FIRST_MS));
  thumbTimers.push(setInterval(sendThumbnail, THUMB_EVERY_MS));
}

function stopThumbnails() {
  thumbTimers.forEach((t) => { clearTimeout(t); clearInterval(t); });
  thumbTimers = [];
}

export function captureThumbnail() {
  const source = screen.querySelector("canvas");
  if (!source || !source.width || !source.height) return Promise.resolve(null);
  const out = document.createElement("canvas");
  out.width = THUMB_W;
  out.height = THUMB_H;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#1b2430";
  ctx.fillRect(0, 0, THUMB_W, THUMB_H);
  // Fit the whole screen in the picture, keeping its proportions.
  const k = Math.min(THUMB_W / source.width, THUMB_H / source.height);
  const w = source.width * k, h = source.height * k;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (THUMB_W - w) / 2, (THUMB_H - h) / 2, w, h);
  return new Promise((resolve) => out.toBlob(resolve, "image/jpeg", 0.72));
}

async function sendThumbnail() {
  if (!rfb) return;
  try {
    const blob = await captureThumbnail();
    if (blob) await api("PUT", `/api/instances/${uid}/thumbnail`, blob, { headers: { "Content-Type": "image/jpeg" } });
  } catch (err) {
    console.warn("thumbnail not sent", err);
  }
}

// --- toolbar -----------------------------------------------------------------------------------
scaleBtn.addEventListener("click", () => {
  scaling = !scaling;
  localStorage.setItem("visa.desktop.scale", scaling ? "1" : "0");
  applyViewMode();
});
clipBtn.addEventListener("click", () => {
  const open = clipPanel.classList.toggle("hidden") === false;
  clipBtn.setAttribute("aria-pressed", String(open));
  if (open) clipText.focus();
});
document.getElementById("clipboard-send").addEventListener("click", () => {
  if (!rfb || session?.view_only) return;
  rfb.clipboardPasteFrom(clipText.value);
  toast("Sent to the desktop's clipboard");
  rfb.focus();
});
cadBtn.addEventListener("click", () => { if (rfb && !session?.view_only) rfb.sendCtrlAltDel(); });
document.getElementById("btn-fullscreen").addEventListener("click", () => {
  if (document.fullscreenElement) document.exitFullscreen();
  else document.documentElement.requestFullscreen().catch((err) => toast(err.message, "error"));
});
reconnectBtn.addEventListener("click", () => { reconnectDone(); reconnect.refused = false; connect(); });
window.addEventListener("beforeunload", () => { leaving = true; if (rfb) rfb.disconnect(); });

// For scripted checks (and curious users in the console).
window.visaDesktop = { get rfb() { return rfb; }, get session() { return session; }, captureThumbnail, sendThumbnail };

if (bar.dataset.state === "ACTIVE" || bar.dataset.state === "PARTIALLY_ACTIVE") {
  connect();
} else {
  setStatus("Not running", "unavailable");
  showOverlay("This instance is not running: start it from its page first.");
}
