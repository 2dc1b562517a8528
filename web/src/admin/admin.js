// Admin pages: forms and buttons that call /api/admin with the CSRF header, then reload.
//   <form data-api="/api/…" data-method="PUT"> fields: name="a.b" nests, data-type converts
//     (int, float, bool, list, list-csv, date, datetime, lifetime); empty fields are left out.
//   <button data-api="/api/…" data-method="POST" data-body='{"action": "stop"}' data-confirm="…">

const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

async function call(method, url, body) {
  const opts = { method, credentials: "same-origin", headers: { Accept: "application/json", "X-CSRF-Token": csrf() } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(url, opts);
  const data = (resp.headers.get("Content-Type") || "").includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const err = new Error((data && data.message) || `request failed (${resp.status})`);
    err.field = data && data.field;
    throw err;
  }
  return data;
}

function utc(value, type) {
  if (!value) return undefined;
  if (type === "date") return `${value}T00:00:00Z`;
  return value.length === 16 ? `${value}:00Z` : `${value}Z`;
}

function setPath(obj, path, value) {
  const keys = path.split(".");
  let o = obj;
  for (const k of keys.slice(0, -1)) o = o[k] ??= {};
  o[keys.at(-1)] = value;
}

export function formBody(form) {
  const body = {};
  const skipGroups = new Set();
  for (const el of form.querySelectorAll("[data-optional-group]")) {
    if (!el.value) skipGroups.add(el.dataset.optionalGroup);
  }
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    const type = el.dataset.type || "";
    if (el.dataset.optionalGroup && skipGroups.has(el.dataset.optionalGroup)) continue;
    if (type === "list") {
      const keys = el.name.split(".");
      let cur = body;
      for (const k of keys.slice(0, -1)) cur = cur[k] ??= {};
      const list = (cur[keys.at(-1)] ??= []);
      if (el.checked) list.push(el.value);
      continue;
    }
    if (el.type === "checkbox") {
      if (type === "bool") setPath(body, el.name, el.checked);
      continue;
    }
    const raw = el.value.trim();
    if (type === "list-csv") {
      setPath(body, el.name, raw ? raw.split(",").map((s) => s.trim()).filter(Boolean) : []);
      continue;
    }
    if (raw === "") continue;
    let value = raw;
    if (type === "int") value = parseInt(raw, 10);
    else if (type === "float") value = parseFloat(raw);
    else if (type === "date" || type === "datetime") value = utc(raw, type);
    else if (type === "lifetime") {
      body.lifetimes = [{ hours: parseInt(raw, 10) }];
      continue;
    }
    setPath(body, el.name, value);
  }
  return body;
}

function say(message, isError) {
  const el = document.querySelector(".admin-message");
  if (!el) return;
  el.textContent = message;
  el.hidden = false;
  el.classList.toggle("error", !!isError);
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-api]");
  if (!form) return;
  ev.preventDefault();
  const out = form.querySelector(".form-error");
  if (out) out.textContent = "";
  try {
    await call(form.dataset.method || "POST", form.dataset.api, formBody(form));
    sessionStorage.setItem("admin-message", "Saved.");
    location.reload();
  } catch (err) {
    const text = err.field ? `${err.message}` : err.message;
    if (out) out.textContent = text;
    else say(text, true);
  }
});

document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-api]");
  if (!btn || btn.disabled) return;
  if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) return;
  btn.disabled = true;
  try {
    await call(btn.dataset.method || "POST", btn.dataset.api, btn.dataset.body ? JSON.parse(btn.dataset.body) : undefined);
    sessionStorage.setItem("admin-message", "Done.");
    location.reload();
  } catch (err) {
    say(err.message, true);
    btn.disabled = false;
  }
});

const pending = sessionStorage.getItem("admin-message");
if (pending) {
  sessionStorage.removeItem("admin-message");
  say(pending, false);
}
