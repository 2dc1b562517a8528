// The create wizard: experiments (and, optionally, open data) -> environment -> size -> name and screen.
// Sizes come from GET /api/plans for the chosen experiments: the server decides what is allowed.
// Open data (other proposals whose embargo ended) is found with GET /api/experiments/open-data.
// Whether each size can be had now comes from GET /api/capacity (the clouds' own figures): a
// size with no room is shown as such and cannot be picked (the server refuses it too).
import { api, ApiError } from "./app.js";

const form = document.getElementById("wizard");
const list = document.getElementById("experiment-list");
const search = document.getElementById("exp-search");
const instrument = document.getElementById("exp-instrument");
const year = document.getElementById("exp-year");
const noExperiment = document.getElementById("no-experiment");
const envBox = document.getElementById("environments");
const flavourBox = document.getElementById("flavours");
const nameInput = document.getElementById("name");
const createBtn = document.getElementById("create");
const summary = document.getElementById("summary");
const errorBox = document.getElementById("form-error");
const openSearch = document.getElementById("open-search");
const openList = document.getElementById("open-list");
const openNone = document.getElementById("open-none");

const state = { plans: [], image: null, planId: null, nameTouched: false, fetchSeq: 0, openSeq: 0, capacity: new Map() };
// Open data by id: as last found, and as chosen (kept while the search changes).
const openFound = new Map();
const openChosen = new Map();

const selectedExperiments = () =>
  [...form.querySelectorAll('input[name="experiment"]:checked')].map((el) => Number(el.value));

function filterExperiments() {
  if (!list) return;
  const q = (search.value || "").trim().toLowerCase();
  let shown = 0;
  for (const row of list.querySelectorAll("[data-experiment]")) {
    const ok = (!q || row.dataset.search.includes(q))
      && (!instrument.value || row.dataset.instrument === instrument.value)
      && (!year.value || row.dataset.year === year.value);
    row.classList.toggle("hidden", !ok);
    if (ok) shown++;
  }
  document.getElementById("exp-none").classList.toggle("hidden", shown > 0);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "type" || k === "title") node.setAttribute(k, v);
    else node[k] = v;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const memory = (mb) => (mb >= 1024 ? `${+(mb / 1024).toFixed(1)} GB` : `${mb} MB`);
const protocolNames = { VNC: "Desktop", JUPYTER: "JupyterLab", RDP: "Remote desktop", SSH: "SSH" };

function flavourSpecs(f) {
  return el("div", { class: "specs" },
    el("span", { class: "spec" }, `${f.cores} cores`),
    el("span", { class: "spec" }, memory(f.memory_mb)),
    f.gpu_count ? el("span", { class: "spec gpu" }, `${f.gpu_count} × ${f.gpu_kind || "GPU"}`) : null);
}

function images() {
  const seen = new Map();
  for (const p of state.plans) if (!seen.has(p.image.name)) seen.set(p.image.name, p.image);
  return [...seen.values()];
}

function renderEnvironments() {
  envBox.replaceChildren();
  const imgs = images();
  if (!imgs.length) {
    envBox.append(el("p", { class: "muted" }, selectionMade() ? "No environment is available for this choice." : "Choose experiments first."));
    return;
  }
  if (!imgs.some((i) => i.name === state.image)) {
    const preset = state.plans.find((p) => p.preset);
    state.image = (preset || state.plans[0]).image.name;
  }
  for (const img of imgs) {
    envBox.append(el("button", { type: "button", class: "choice", "data-image": img.name, "aria-pressed": String(img.name === state.image) },
      el("span", { class: "name" }, `${img.environment} `, el("span", { class: "muted small" }, img.version || "")),
      el("span", { class: "desc" }, img.description || ""),
      el("div", { class: "specs" }, ...(img.protocols || []).map((p) => el("span", { class: "spec" }, protocolNames[p] || p)))));
  }
}

function renderFlavours() {
  flavourBox.replaceChildren();
  const plans = state.plans.filter((p) => p.image.name === state.image);
  if (!plans.length) {
    flavourBox.append(el("p", { class: "muted" }, "Choose an environment first."));
    state.planId = null;
    return;
  }
  const full = (p) => state.capacity.get(p.flavour.name)?.available === false;
  if (!plans.some((p) => p.id === state.planId && !full(p))) {
    const open = plans.filter((p) => !full(p));
    state.planId = open.length ? (open.find((p) => p.preset) || open[0]).id : null;
  }
  for (const p of plans) {
    const days = Math.round(p.max_lifetime_hours / 24);
    const attrs = { type: "button", class: full(p) ? "choice unavailable" : "choice", "data-plan": String(p.id),
      "aria-pressed": String(p.id === state.planId) };
    if (full(p)) attrs.disabled = true; // a property: "" would leave it enabled
    flavourBox.append(el("button", attrs,
      el("span", { class: "name" }, p.flavour.name),
      el("span", { class: "desc" }, p.flavour.description || ""),
      flavourSpecs(p.flavour),
      el("span", { class: "desc" }, `Lives up to ${days >= 1 ? `${days} day${days > 1 ? "s" : ""}` : `${p.max_lifetime_hours} h`}`),
      capacityNote(p.flavour.name)));
  }
}

function capacityNote(name) {
  const c = state.capacity.get(name);
  if (!c) return null;
  // From one's own accepted GPU booking: the machine is made from it and ends with it.
  if (c.available === true && c.booked_until) {
    return el("span", { class: "capacity ok", "data-capacity": "available", "data-booked-until": c.booked_until },
      `Booked for you until ${c.booked_until}: the machine ends with your booking`);
  }
  if (c.available === true) return el("span", { class: "capacity ok", "data-capacity": "available" }, "Available now");
  if (c.available === false) return el("span", { class: "capacity full", "data-capacity": "unavailable", title: c.message }, `Not available now: ${c.message}`);
  return el("span", { class: "capacity unknown", "data-capacity": "unknown", title: c.message }, "Availability unknown");
}

async function loadCapacity() {
  try {
    const rows = await api("GET", "/api/capacity");
    state.capacity = new Map(rows.map((r) => [r.flavour, r]));
  } catch {
    state.capacity = new Map(); // unknown: the server still decides at creation
  }
}

function openRow(e) {
  const box = el("input", { type: "checkbox", name: "open-data", value: String(e.id) });
  box.checked = openChosen.has(e.id);
  const since = e.public_at ? e.public_at.slice(0, 10) : "";
  return el("label", { class: `experiment${box.checked ? " selected" : ""}`, "data-open": String(e.id) },
    box,
    el("span", {}, el("span", { class: "what" }, `${e.proposal} · ${e.instrument}`), el("br"),
      el("span", { class: "title" }, e.title || e.proposal_title || "")),
    el("span", { class: "when" }, "public since", el("br"), since));
}

// Chosen ones first, whatever the search; one's own experiments are picked above instead.
function renderOpenData(found) {
  const mine = (id) => !!list?.querySelector(`[data-experiment="${id}"]`);
  for (const e of found) openFound.set(e.id, e);
  const rows = [...openChosen.values(), ...found.filter((e) => !openChosen.has(e.id) && !mine(e.id))];
  openList.replaceChildren(...rows.map(openRow), openNone);
  openNone.textContent = openSearch.value.trim() ? "No open data matches this search." : "No open data yet.";
  openNone.classList.toggle("hidden", rows.length > 0);
}

async function searchOpenData() {
  const seq = ++state.openSeq;
  const q = openSearch.value.trim();
  try {
    const found = await api("GET", `/api/experiments/open-data?limit=20${q ? `&q=${encodeURIComponent(q)}` : ""}`);
    if (seq === state.openSeq) renderOpenData(found); // a newer search won otherwise
  } catch (err) {
    showError(err.message);
  }
}

let openTimer;
openSearch.addEventListener("input", () => {
  clearTimeout(openTimer);
  openTimer = setTimeout(searchOpenData, 250);
});
openList.addEventListener("change", (ev) => {
  const row = ev.target.closest("[data-open]");
  if (!row) return;
  const id = Number(row.dataset.open);
  if (ev.target.checked) openChosen.set(id, openFound.get(id));
  else openChosen.delete(id);
  row.classList.toggle("selected", ev.target.checked);
  update();
});

const selectionMade = () => selectedExperiments().length > 0 || (noExperiment && noExperiment.checked);

async function loadPlans() {
  const ids = selectedExperiments();
  const seq = ++state.fetchSeq;
  if (!selectionMade()) {
    state.plans = [];
  } else {
    const query = ids.map((id) => `experiment=${id}`).join("&");
    try {
      const [plans] = await Promise.all([api("GET", `/api/plans${query ? `?${query}` : ""}`), loadCapacity()]);
      if (seq !== state.fetchSeq) return; // a newer selection won
      state.plans = plans;
    } catch (err) {
      showError(err.message);
      return;
    }
  }
  renderEnvironments();
  renderFlavours();
  update();
}

function suggestName() {
  if (state.nameTouched) return;
  const rows = selectedExperiments().map((id) => list.querySelector(`[data-experiment="${id}"] .what`)?.textContent.split(" · ")[0]);
  const plan = state.plans.find((p) => p.id === state.planId);
  const env = plan ? plan.image.environment : "analysis";
  nameInput.value = rows.length ? `${[...new Set(rows)].join(" ")} ${env.toLowerCase()}` : (plan ? `${env.toLowerCase()} machine` : "");
}

function markSteps() {
  const done = {
    experiments: selectionMade(),
    environment: !!state.image && state.plans.length > 0,
    flavour: !!state.planId,
    details: nameInput.value.trim().length > 0,
  };
  let current = false;
  for (const li of document.querySelectorAll(".steps-nav li")) {
    const ok = done[li.dataset.step];
    li.classList.toggle("done", ok);
    li.classList.toggle("current", !ok && !current);
    if (!ok) current = true;
  }
  return Object.values(done).every(Boolean);
}

function update() {
  suggestName();
  const ready = markSteps();
  createBtn.disabled = !ready;
  const plan = state.plans.find((p) => p.id === state.planId);
  const n = selectedExperiments().length;
  const open = openChosen.size;
  summary.textContent = plan
    ? `${plan.image.environment} on ${plan.flavour.name} (${plan.flavour.cores} cores, ${memory(plan.flavour.memory_mb)})`
      + (n ? ` · ${n} experiment${n > 1 ? "s" : ""}` : " · no experiment")
      + (open ? ` · ${open} open data, read-only` : "")
    : "Choose experiments, an environment and a size.";
}

function showError(message) {
  errorBox.textContent = message;
  errorBox.classList.toggle("hidden", !message);
}

function screenSize() {
  const v = document.getElementById("screen-size").value;
  if (v !== "fit") return v.split("x").map(Number);
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  // The desktop page has a slim bar on top: leave room for it.
  const w = clamp(Math.floor(window.innerWidth / 2) * 2, 640, 7680);
  const h = clamp(Math.floor((window.innerHeight - 40) / 2) * 2, 480, 4320);
  return [w, h];
}

list?.addEventListener("change", (ev) => {
  const row = ev.target.closest("[data-experiment]");
  if (row) row.classList.toggle("selected", ev.target.checked);
  if (ev.target.checked && noExperiment) noExperiment.checked = false;
  loadPlans();
});
noExperiment?.addEventListener("change", () => {
  if (noExperiment.checked) {
    for (const box of form.querySelectorAll('input[name="experiment"]:checked')) {
      box.checked = false;
      box.closest("[data-experiment]").classList.remove("selected");
    }
  }
  loadPlans();
});
for (const input of [search, instrument, year]) input?.addEventListener("input", filterExperiments);
envBox.addEventListener("click", (ev) => {
  const card = ev.target.closest("[data-image]");
  if (!card) return;
  state.image = card.dataset.image;
  renderEnvironments();
  renderFlavours();
  update();
});
flavourBox.addEventListener("click", (ev) => {
  const card = ev.target.closest("[data-plan]");
  if (!card) return;
  state.planId = Number(card.dataset.plan);
  renderFlavours();
  update();
});
nameInput.addEventListener("input", () => { state.nameTouched = true; update(); });

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  showError("");
  const [screen_width, screen_height] = screenSize();
  createBtn.disabled = true;
  createBtn.textContent = "Creating…";
  try {
    const inst = await api("POST", "/api/instances", {
      name: nameInput.value.trim(),
      plan_id: state.planId,
      experiment_ids: selectedExperiments(),
      open_data_ids: [...openChosen.keys()],
      screen_width, screen_height,
      keyboard_layout: document.getElementById("keyboard").value,
      own_home: document.getElementById("own-home").checked,
    });
    location.assign(`/instances/${inst.uid}`);
  } catch (err) {
    showError(err instanceof ApiError && err.field ? `${err.message}` : err.message);
    createBtn.disabled = false;
    createBtn.textContent = "Create instance";
  }
});

// A single experiment is picked for the user: the usual case at a facility.
const boxes = form.querySelectorAll('input[name="experiment"]');
if (boxes.length === 1) {
  boxes[0].checked = true;
  boxes[0].closest("[data-experiment]").classList.add("selected");
}
filterExperiments();
loadPlans();
searchOpenData();
