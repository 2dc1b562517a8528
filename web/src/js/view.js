// A public view link: the desktop, view only, for someone without an account. The link in the
// address is the only credential; the gateway drops any input this page (or anything else) sends.
import RFB from "../vendor/novnc/core/rfb.js";

const screen = document.getElementById("screen");
const statusEl = document.getElementById("status");
const overlay = document.getElementById("overlay");
const overlayText = document.getElementById("overlay-text");
const token = decodeURIComponent(location.pathname.split("/").pop() || "");

function setStatus(text, state) {
  statusEl.textContent = text;
  document.body.dataset.view = state; // read by tests and styles
}

function showOverlay(text) {
  overlayText.textContent = text;
  overlay.classList.toggle("hidden", !text);
}

const CLOSED = {
  4403: "This link has been revoked or has expired.",
  4409: "The desktop is not shown right now.",
};

function connect() {
  setStatus("Connecting…", "connecting");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${proto}//${location.host}/ws/view?token=${encodeURIComponent(token)}`;
  // The socket is made here to read how the gateway closed it (noVNC does not tell): with code
  // 1011 its reason is a fixed text of visa's saying why the machine ended the connection.
  const socket = new WebSocket(url);
  let code = 0;
  let reason = "";
  socket.addEventListener("close", (ev) => { code = ev.code; reason = ev.code === 1011 ? ev.reason || "" : ""; });
  const rfb = new RFB(screen, socket, { shared: true });
  rfb.viewOnly = true;
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.background = "#0f141b";
  rfb.addEventListener("connect", () => {
    showOverlay("");
    setStatus("Watching · view only", "connected");
  });
  rfb.addEventListener("disconnect", () => {
    setStatus("Not connected", "disconnected");
    if (reason) {
      showOverlay(`The desktop closed the connection: ${reason}.`);
      return;
    }
    showOverlay(CLOSED[code] || "The desktop cannot be shown: the link may have been revoked or have expired.");
  });
  rfb.addEventListener("desktopname", (ev) => { document.title = `${ev.detail.name} · VISA`; });
}

document.getElementById("btn-fullscreen")?.addEventListener("click", () => {
  document.getElementById("viewer").requestFullscreen?.();
});

connect();
