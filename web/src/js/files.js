// The instance's files: browse the home and the processed data, download, upload with a
// progress bar. An upload goes in chunks, each a PUT with its offset, so one that breaks
// (a network blip, a restarted web process) resumes where the instance says the file ends.
// Names come from the machine, which is hostile: they are set as text, never as markup.
import { ApiError, api, confirmDialog, csrfToken, onEvent, toast } from "./app.js";

const card = document.getElementById("files");
const uid = document.getElementById("instance").dataset.uid;
const rootSelect = document.getElementById("files-root");
const crumbs = document.getElementById("files-crumbs");
const list = document.getElementById("files-list");
const note = document.getElementById("files-note");
const errorBox = document.getElementById("files-error");
const form = document.getElementById("files-upload");
const CHUNK = Number(card.dataset.chunk) || 8 * 1024 * 1024;
const RETRIES = 5;

let roots = [];
let current = null;

const base = `/api/instances/${uid}/files`;
const q = (params) => new URLSearchParams(params).toString();

function showError(message) {
  errorBox.textContent = message || "";
  errorBox.classList.toggle("hidden", !message);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function rootOf(path) {
  return roots.filter((r) => path === r || path.startsWith(r.replace(/\/$/, "") + "/")).sort((a, b) => b.length - a.length)[0];
}

function renderCrumbs(path) {
  const root = rootOf(path) || path;
  const parts = [{ label: root, path: root }];
  let at = root.replace(/\/$/, "");
  for (const part of path.slice(at.length).split("/").filter(Boolean)) {
    at = `${at}/${part}`;
    parts.push({ label: part, path: at });
  }
  crumbs.replaceChildren(...parts.flatMap((p, i) => {
    const b = Object.assign(document.createElement("button"), { type: "button", textContent: p.label });
    b.dataset.path = p.path;
    b.addEventListener("click", () => load(p.path));
    return i ? [" / ", b] : [b];
  }));
  crumbs.dataset.current = path;
}

function entryItem(e) {
  const li = document.createElement("li");
  li.dataset.entry = e.name;
  li.dataset.kind = e.kind;
  if (e.kind === "dir" || e.kind === "link") {
    // A link is followed by the server, which refuses one that leads out of the roots.
    const label = e.kind === "dir" ? `${e.name}/` : `${e.name} →`;
    const b = Object.assign(document.createElement("button"), { type: "button", className: "dir name", textContent: label });
    b.addEventListener("click", () => load(e.path));
    li.append(b);
  } else if (e.kind === "file") {
    const a = Object.assign(document.createElement("a"), { className: "name", textContent: e.name, title: e.name });
    a.href = `${base}/content?${q({ path: e.path })}`;
    a.download = e.name;
    a.dataset.testid = "file-download";
    li.append(a, Object.assign(document.createElement("span"), { className: "muted small", textContent: formatBytes(e.size ?? 0) }));
  } else {
    li.append(Object.assign(document.createElement("span"), { className: "name muted", textContent: e.name }));
  }
  return li;
}

async function load(path) {
  showError("");
  try {
    const data = await api("GET", `${base}?${q(path ? { path } : {})}`);
    if (!roots.length) {
      roots = data.roots;
      rootSelect.replaceChildren(...roots.map((r, i) => Object.assign(document.createElement("option"), {
        value: r, textContent: i === 0 ? `Home (${r})` : `Processed data (${r})`,
      })));
    }
    current = data.path;
    const root = rootOf(current);
    if (root) rootSelect.value = root;
    renderCrumbs(current);
    const entries = [...data.entries].sort((a, b) => (a.kind === "dir") === (b.kind === "dir") ? a.name.localeCompare(b.name) : a.kind === "dir" ? -1 : 1);
    list.replaceChildren(...entries.map(entryItem));
    const notes = [];
    if (!entries.length) notes.push("This folder is empty.");
    if (data.truncated) notes.push("Only the first entries are shown.");
    if (data.skipped) notes.push(`${data.skipped} names that are not text are not shown.`);
    note.textContent = notes.join(" ");
    note.classList.toggle("hidden", !notes.length);
    card.dataset.loaded = current; // read by tests
  } catch (err) {
    showError(err.message);
  }
}

rootSelect.addEventListener("change", () => load(rootSelect.value));

// --- upload --------------------------------------------------------------------------------
const input = document.getElementById("files-input");
const progress = document.getElementById("files-progress");
const progressText = document.getElementById("files-progress-text");
const resumeBtn = document.getElementById("files-resume");
let stalled = null; // { file, folder, done, overwrite }: an upload that stopped and may resume

// One chunk as a PUT with upload progress (fetch has none for request bodies).
function putChunk(path, offset, blob, overwrite, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const params = { path, offset: String(offset) };
    if (overwrite) params.overwrite = "true";
    xhr.open("PUT", `${base}/content?${q(params)}`);
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (ev) => onProgress(ev.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(new ApiError(xhr.status, xhr.response));
    });
    xhr.addEventListener("error", () => reject(new Error("the connection broke")));
    xhr.addEventListener("abort", () => reject(new Error("the upload was cancelled")));
    xhr.send(blob);
  });
}

function setProgress(file, done) {
  progress.classList.remove("hidden");
  progress.value = file.size ? done / file.size : 1;
  progressText.textContent = `${file.name}: ${formatBytes(done)} of ${formatBytes(file.size)}`;
}

async function upload(file, folder, done = 0, overwrite = false) {
  const path = `${folder.replace(/\/$/, "")}/${file.name}`;
  let failures = 0;
  setProgress(file, done);
  while (done < file.size || (done === 0 && file.size === 0)) {
    const end = Math.min(file.size, done + CHUNK);
    try {
      const r = await putChunk(path, done, file.slice(done, end), overwrite && done === 0, (n) => setProgress(file, done + n));
      done = r.size;
      failures = 0;
      setProgress(file, done);
      if (file.size === 0) break;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409 && err.field === "path" && done === 0 && !overwrite) {
        if (!(await confirmDialog({ title: `Replace ${file.name}?`, text: "A file of that name is in this folder.", ok: "Replace" }))) {
          progressText.textContent = `${file.name}: not uploaded`;
          return false;
        }
        overwrite = true;
        continue;
      }
      if (err instanceof ApiError && err.status === 409 && err.field === "offset" && Number.isInteger(err.body.size)
          && err.body.size <= file.size && failures < RETRIES) {
        done = err.body.size; // the instance says where the file ends: go on from there
        failures++;
        continue;
      }
      const transient = !(err instanceof ApiError) || err.status >= 500 || err.status === 429;
      if (transient && failures < RETRIES) {
        failures++;
        // A first request that broke may have made the file: ours to replace, then.
        if (done === 0) overwrite = true;
        await new Promise((r) => setTimeout(r, 500 * failures));
        continue; // the same offset: a 409 tells the real one if part of it arrived
      }
      stalled = { file, folder, done, overwrite };
      resumeBtn.classList.toggle("hidden", !transient);
      showError(`${file.name}: ${err.message}`);
      progressText.textContent = `${file.name}: stopped at ${formatBytes(done)} of ${formatBytes(file.size)}`;
      return false;
    }
  }
  progressText.textContent = `${file.name}: uploaded (${formatBytes(file.size)})`;
  card.dataset.uploaded = file.name; // read by tests
  return true;
}

if (form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const files = [...input.files];
    if (!files.length) { showError("Choose a file to upload"); return; }
    showError("");
    resumeBtn.classList.add("hidden");
    const folder = current;
    let ok = 0;
    for (const file of files) if (await upload(file, folder)) ok++;
    if (ok) toast(ok === 1 ? `${files[0].name} uploaded` : `${ok} files uploaded`);
    form.reset();
    if (current === folder) await load(folder);
  });
  resumeBtn.addEventListener("click", async () => {
    if (!stalled) return;
    const { file, folder, done, overwrite } = stalled;
    stalled = null;
    resumeBtn.classList.add("hidden");
    showError("");
    if (await upload(file, folder, done, overwrite)) {
      toast(`${file.name} uploaded`);
      if (current === folder) await load(folder);
    }
  });
}

// Files move only while the machine runs: the browser opens when it does, live.
const RUNNING = ["ACTIVE", "PARTIALLY_ACTIVE"];
let running = null;
function follow(state) {
  const now = RUNNING.includes(state);
  if (now === running) return;
  running = now;
  card.dataset.running = String(now);
  if (form) form.classList.toggle("hidden", !now);
  if (now) {
    load(current);
  } else {
    list.replaceChildren();
    crumbs.replaceChildren();
    note.textContent = "Files can be browsed while the instance runs.";
    note.classList.remove("hidden");
  }
}
follow(document.querySelector('[data-testid="status-card"]')?.dataset.state || "");
onEvent("instance", (d) => { if (d.instance?.uid === uid) follow(d.instance.state); });
