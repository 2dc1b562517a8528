// Shared by every page: API calls with the CSRF header, the live event stream, confirmations,
// toasts, fragment refreshes, instance actions and lifetime countdowns.

export const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (${status})`);
    this.status = status;
    this.body = body || {};
    this.field = this.body.field;
  }
}

// fetch() with the session cookie and, on anything but GET, the X-CSRF-Token header.
export async function api(method, url, body, { headers = {}, raw = false } = {}) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json", ...headers } };
  if (method !== "GET" && method !== "HEAD") opts.headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer) {
      opts.body = body;
    } else {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
  }
  const resp = await fetch(url, opts);
  if (resp.status === 401) {
    goLogin();
    throw new ApiError(401, { message: "your session has ended: log in again" });
  }
  if (raw) return resp;
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("application/json") ? await resp.json() : null;
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

export function goLogin() {
  const here = location.pathname + location.search;
  location.assign("/login?next=" + encodeURIComponent(here));
}

let toastTimer;
export function toast(message, kind = "info") {
  let el = document.querySelector(".toast");
  if (!el) {
    el = document.createElement("div");
    el.className = "toast";
    el.setAttribute("role", "status");
    document.body.append(el);
  }
  el.textContent = message;
  el.classList.toggle("error", kind === "error");
  el.classList.remove("hidden");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.add("hidden"), kind === "error" ? 8000 : 4000);
}

// A modal yes/no question; resolves to true when confirmed.
export function confirmDialog({ title, text = "", ok = "Confirm", danger = true }) {
  const dlg = document.getElementById("confirm-dialog");
  dlg.querySelector('[data-role="title"]').textContent = title;
  dlg.querySelector('[data-role="text"]').textContent = text;
  const okBtn = dlg.querySelector('button[value="ok"]');
  okBtn.textContent = ok;
  okBtn.className = danger ? "btn danger solid" : "btn primary";
  return new Promise((resolve) => {
    const done = (answer) => {
      dlg.close();
      dlg.removeEventListener("click", onClick);
      dlg.removeEventListener("cancel", onCancel);
      resolve(answer);
    };
    const onClick = (ev) => {
      const b = ev.target.closest("button");
      if (b) done(b.value === "ok");
    };
    const onCancel = (ev) => { ev.preventDefault(); done(false); };
    dlg.addEventListener("click", onClick);
    dlg.addEventListener("cancel", onCancel);
    dlg.showModal();
    okBtn.focus();
  });
}

// --- live events -----------------------------------------------------------------------
// One EventSource per page; handlers by event name. The browser reconnects on its own
// after a dropped stream; a refused one (401) is retried slowly.
const handlers = new Map();
let source = null;
let connections = 0;
// uid -> version, as last told by the server; first, what the page was rendered with, so that
// a change between the render and the stream's first read is seen.
let known = (() => {
  const meta = document.querySelector('meta[name="live-versions"]');
  try { return meta ? JSON.parse(meta.content) : null; } catch { return null; }
})();

export function onEvent(name, fn) {
  if (!handlers.has(name)) handlers.set(name, []);
  handlers.get(name).push(fn);
  if (!source) openEvents();
}

function dispatch(name, data) {
  for (const fn of handlers.get(name) || []) {
    try { fn(data); } catch (err) { console.error(err); }
  }
}

function openEvents() {
  source = new EventSource("/api/events");
  for (const name of ["instance", "instances", "thumbnail", "ready", "logout", "presence", "support"]) {
    source.addEventListener(name, (ev) => {
      const data = ev.data ? JSON.parse(ev.data) : {};
      if (name === "logout") { goLogin(); return; }
      if (name === "ready") {
        // Streams are short; after a reconnect (or since the render), say "stale" only if something changed.
        data.reconnected = connections++ > 0;
        const versions = data.versions || {};
        const changed = known !== null && (Object.keys(known).length !== Object.keys(versions).length
          || Object.entries(versions).some(([uid, v]) => known[uid] !== v));
        known = versions;
        if (changed) dispatch("stale", data);
      }
      if (name === "instance" && known && data.instance) known[data.instance.uid] = data.version;
      if (name === "instances" && known) {
        known = Object.fromEntries(data.uids.map((uid) => [uid, known[uid]]));
      }
      dispatch(name, data);
    });
  }
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      setTimeout(openEvents, 10000);
    }
  });
}

// --- fragments ---------------------------------------------------------------------------
// Server-rendered parts of a page re-fetched on events: one template, no markup in scripts.
const pending = new WeakMap();
export function refreshFragment(el) {
  if (!el) return;
  clearTimeout(pending.get(el));
  pending.set(el, setTimeout(async () => {
    try {
      const resp = await api("GET", el.dataset.fragment, undefined, { raw: true, headers: { Accept: "text/html" } });
      if (resp.status === 404) { el.dispatchEvent(new CustomEvent("gone", { bubbles: true })); return; }
      if (!resp.ok) return;
      el.innerHTML = await resp.text();
      tickLifetimes();
    } catch (err) {
      console.warn("refresh failed", err);
    }
  }, 150));
}

// --- instance actions (start, stop, reboot, delete) ------------------------------------------
const QUESTIONS = {
  stop: (name) => ({ title: `Stop ${name}?`, text: "Open desktops and running programs are closed. The disk is kept.", ok: "Stop" }),
  reboot: (name) => ({ title: `Reboot ${name}?`, text: "Open desktops and running programs are closed.", ok: "Reboot" }),
  delete: (name) => ({ title: `Delete ${name}?`, text: "The machine and everything on its local disk are deleted. Experiment data is not affected. This cannot be undone.", ok: "Delete" }),
};

export function bindInstanceActions(onDone) {
  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest("button[data-action]");
    if (!btn || !["start", "stop", "reboot", "delete"].includes(btn.dataset.action)) return;
    const { action, uid } = btn.dataset;
    const name = btn.dataset.name || "this instance";
    if (QUESTIONS[action] && !(await confirmDialog(QUESTIONS[action](name)))) return;
    btn.disabled = true;
    try {
      if (action === "delete") await api("DELETE", `/api/instances/${uid}`);
      else await api("POST", `/api/instances/${uid}/${action}`);
      toast({ start: "Starting…", stop: "Stopping…", reboot: "Rebooting…", delete: "Deleting…" }[action]);
      onDone?.(action, uid);
    } catch (err) {
      toast(err.message, "error");
      btn.disabled = false;
    }
  });
}

// --- lifetimes -------------------------------------------------------------------------------
export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  return `${m} min`;
}

const loadedAt = Date.now();
function tickLifetimes() {
  const elapsed = (Date.now() - loadedAt) / 1000;
  for (const el of document.querySelectorAll("[data-seconds-left]")) {
    if (!el.dataset.base) el.dataset.base = String(Number(el.dataset.secondsLeft) + elapsed);
    el.textContent = formatDuration(Number(el.dataset.base) - elapsed);
  }
}
setInterval(tickLifetimes, 30000);

// --- announcements -------------------------------------------------------------------------
// Banners and modals are rendered by the server; dismissing one is remembered for this user.
async function dismissNotice(id) {
  try {
    await api("POST", `/api/notifications/${encodeURIComponent(id)}/ack`);
  } catch (err) {
    toast(err.message, "error");
    return;
  }
  for (const el of document.querySelectorAll(`[data-notice="${CSS.escape(id)}"]`)) {
    if (el.tagName === "DIALOG" && el.open) el.close();
    el.remove();
  }
}

document.addEventListener("click", (ev) => {
  const button = ev.target.closest("[data-dismiss-notice]");
  if (button) dismissNotice(button.dataset.dismissNotice);
});
for (const dialog of document.querySelectorAll("dialog[data-modal-notice]")) {
  dialog.addEventListener("cancel", (ev) => ev.preventDefault()); // read it, then say so
  dialog.showModal();
  break; // one at a time: the next one shows on the next page
}
