// One instance: live status and progress, actions, sharing and lifetime extension.
import { api, bindInstanceActions, confirmDialog, onEvent, refreshFragment, toast } from "./app.js";

const root = document.getElementById("instance");
const uid = root.dataset.uid;
const status = document.getElementById("status");
const refresh = () => refreshFragment(status);

bindInstanceActions((action) => {
  if (action === "delete") location.assign("/");
  else refresh();
});
onEvent("instance", (d) => { if (d.instance?.uid === uid) refresh(); });
onEvent("instances", (d) => { if (!d.uids.includes(uid)) gone(); });
onEvent("stale", (d) => { if (d.uids.includes(uid)) refresh(); else gone(); });
onEvent("thumbnail", (d) => {
  if (d.uid !== uid) return;
  const img = status.querySelector("img[data-thumb]");
  if (img) img.src = d.url;
  else refresh();
});
status.addEventListener("gone", gone);

function gone() {
  status.innerHTML = '<div class="notice warn">This instance has been deleted, or is no longer shared with you. <a href="/">Back to my instances</a></div>';
}

// --- sharing ---------------------------------------------------------------------------
const invite = document.getElementById("invite");
if (invite) {
  const searchBox = document.getElementById("invite-search");
  const results = document.getElementById("invite-results");
  const chosen = document.getElementById("invite-chosen");
  const submit = document.getElementById("invite-submit");
  let picked = null;
  let timer;
  let seq = 0;

  const pick = (user) => {
    picked = user;
    searchBox.value = user.full_name ? `${user.full_name} (${user.username})` : user.username;
    results.classList.add("hidden");
    chosen.textContent = `Inviting ${user.username}`;
    submit.disabled = false;
  };

  searchBox.addEventListener("input", () => {
    picked = null;
    submit.disabled = true;
    chosen.textContent = "";
    clearTimeout(timer);
    const q = searchBox.value.trim();
    if (q.length < 2) { results.classList.add("hidden"); return; }
    timer = setTimeout(async () => {
      const mine = ++seq;
      try {
        const found = await api("GET", `/api/users/search?q=${encodeURIComponent(q)}`);
        if (mine !== seq) return;
        const users = Array.isArray(found) ? found : found.users || found.results || [];
        results.replaceChildren(...users.map((u) => {
          const b = document.createElement("button");
          b.type = "button";
          b.dataset.username = u.username;
          b.textContent = u.full_name ? `${u.full_name} — ${u.username}` : u.username;
          b.addEventListener("click", () => pick(u));
          return b;
        }));
        if (!users.length) results.replaceChildren(Object.assign(document.createElement("div"), { className: "muted small", textContent: "Nobody found" }));
        results.classList.remove("hidden");
      } catch (err) {
        toast(err.message, "error");
      }
    }, 250);
  });

  invite.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!picked) return;
    const role = document.getElementById("invite-role").value;
    submit.disabled = true;
    try {
      await api("POST", `/api/instances/${uid}/members`, { username: picked.username, role });
      toast(`${picked.username} may now use this instance as ${role.toLowerCase()}`);
      searchBox.value = "";
      chosen.textContent = "";
      picked = null;
      await reloadMembers();
    } catch (err) {
      toast(err.message, "error");
      submit.disabled = false;
    }
  });
}

document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest('button[data-action="revoke"]');
  if (!btn) return;
  const who = btn.dataset.username;
  if (!(await confirmDialog({ title: `Remove ${who}?`, text: "Their open desktop connections are closed.", ok: "Remove" }))) return;
  try {
    await api("DELETE", `/api/instances/${uid}/members/${encodeURIComponent(who)}`);
    toast(`${who} removed`);
    await reloadMembers();
  } catch (err) {
    toast(err.message, "error");
  }
});

async function reloadMembers() {
  const box = document.getElementById("members");
  const data = await api("GET", `/api/instances/${uid}/members`);
  const members = Array.isArray(data) ? data : data.members || [];
  box.replaceChildren(...members.map((m) => {
    const username = m.username || m.user?.username;
    const full = m.full_name || m.user?.full_name || "";
    const li = document.createElement("li");
    li.dataset.member = username;
    const who = document.createElement("span");
    who.append(full || username, " ");
    const small = Object.assign(document.createElement("span"), { className: "muted small", textContent: username });
    who.append(small);
    const right = document.createElement("span");
    right.append(Object.assign(document.createElement("span"), { className: "badge role", textContent: String(m.role).toLowerCase() }));
    if (m.role !== "OWNER") {
      const b = Object.assign(document.createElement("button"), { type: "button", className: "btn small danger", textContent: "Remove" });
      b.dataset.action = "revoke";
      b.dataset.username = username;
      right.append(" ", b);
    }
    li.append(who, right);
    return li;
  }));
}

// --- lifetime extension ----------------------------------------------------------------------
const extForm = document.getElementById("extension-form");
if (extForm) {
  const until = document.getElementById("ext-until");
  const pad = (n) => String(n).padStart(2, "0");
  const local = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  const ends = new Date(until.dataset.terminates);
  until.min = local(new Date(Math.max(Date.now(), ends.getTime())));
  until.value = local(new Date(ends.getTime() + 7 * 86400000));
  extForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const when = new Date(until.value);
    if (Number.isNaN(when.getTime())) { toast("Choose a date", "error"); return; }
    try {
      const r = await api("POST", `/api/instances/${uid}/extensions`, {
        requested_until: when.toISOString(),
        comment: document.getElementById("ext-comment").value.trim(),
      });
      const state = r && r.state ? String(r.state).toLowerCase() : "sent";
      toast(state === "accepted" ? "Extension accepted" : "Extension requested: you will hear back by email");
      extForm.reset();
      refresh();
    } catch (err) {
      toast(err.message, "error");
    }
  });
}

// --- presence: who is connected now, live ---------------------------------------------------
// Names are set as text, never as markup: a display name is whatever its owner typed.
const presenceList = document.getElementById("presence-list");
const presenceEmpty = document.getElementById("presence-empty");
let waiting = null;

onEvent("presence", (d) => {
  if (d.uid !== uid) return;
  presenceList.replaceChildren(...d.connected.map((p) => {
    const li = document.createElement("li");
    li.dataset.present = p.username;
    const who = document.createElement("span");
    who.append(p.full_name || p.username, " ");
    who.append(Object.assign(document.createElement("span"), { className: "muted small", textContent: p.username }));
    const how = document.createElement("span");
    for (const proto of p.protocols) {
      how.append(Object.assign(document.createElement("span"), { className: "badge role", textContent: proto.toLowerCase() }), " ");
    }
    li.append(who, how);
    return li;
  }));
  presenceEmpty.classList.toggle("hidden", d.connected.length > 0);
  // The owner came or went: the desktop button and the waiting notice change.
  if (waiting !== null && waiting !== d.waiting_for_owner) refresh();
  waiting = d.waiting_for_owner;
});

// --- support requests: a live prompt on the owner's page --------------------------------------
const prompts = document.getElementById("support-prompts");
if (prompts) {
  const list = document.getElementById("support-prompt-list");
  let expiry = null;
  const answer = async (username, verdict) => {
    try {
      await api("POST", `/api/instances/${uid}/support/${encodeURIComponent(username)}/${verdict}`);
      toast(verdict === "approve" ? `${username} may now help on this machine` : `${username} was refused`);
      if (verdict === "approve") await reloadMembers();
    } catch (err) {
      toast(err.message, "error");
    }
    list.querySelector(`li[data-request="${CSS.escape(username)}"]`)?.remove();
    prompts.classList.toggle("hidden", !list.children.length);
  };
  onEvent("support", (d) => {
    if (d.uid !== uid) return;
    list.replaceChildren(...d.requests.map((r) => {
      const li = document.createElement("li");
      li.dataset.request = r.username;
      const who = document.createElement("span");
      who.append(r.full_name || r.username, " ");
      const roles = r.roles.map((x) => x.toLowerCase().replace(/_/g, " ")).join(", ");
      who.append(Object.assign(document.createElement("span"), { className: "muted small", textContent: `${r.username} · ${roles} · asks to help` }));
      const buttons = document.createElement("span");
      const ok = Object.assign(document.createElement("button"), { type: "button", className: "btn small primary", textContent: "Accept" });
      ok.dataset.testid = "support-accept";
      ok.addEventListener("click", () => answer(r.username, "approve"));
      const no = Object.assign(document.createElement("button"), { type: "button", className: "btn small danger", textContent: "Refuse" });
      no.dataset.testid = "support-refuse";
      no.addEventListener("click", () => answer(r.username, "deny"));
      buttons.append(ok, " ", no);
      li.append(who, buttons);
      return li;
    }));
    prompts.classList.toggle("hidden", !d.requests.length);
    // The prompt times out by itself (the server drops it too, and says so on the stream).
    clearTimeout(expiry);
    const soonest = Math.min(...d.requests.map((r) => new Date(r.prompt_until).getTime()));
    if (Number.isFinite(soonest)) expiry = setTimeout(() => prompts.classList.add("hidden"), Math.max(0, soonest - Date.now()));
  });
}

// --- invitation links ---------------------------------------------------------------------------
const linkForm = document.getElementById("invite-link-form");
if (linkForm) {
  linkForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const made = await api("POST", `/api/instances/${uid}/invitations`, { role: document.getElementById("invite-link-role").value });
      const input = document.getElementById("invite-link");
      input.value = made.url;
      document.getElementById("invite-link-box").classList.remove("hidden");
      input.select();
    } catch (err) {
      toast(err.message, "error");
    }
  });
}

// --- settings: name, comments, keyboard layout, screen size (the owner's) --------------------
const editForm = document.getElementById("edit-form");
if (editForm) {
  const errorsOf = () => editForm.querySelectorAll("[data-error-for]");
  editForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const el of errorsOf()) { el.textContent = ""; el.classList.add("hidden"); }
    const [w, h] = editForm.elements.screen.value.split("x").map(Number);
    const body = {
      name: editForm.elements.name.value.trim(),
      comments: editForm.elements.comments.value,
      keyboard_layout: editForm.elements.keyboard_layout.value,
      screen_width: w,
      screen_height: h,
      clipboard_to_viewers: editForm.elements.clipboard_to_viewers.checked,
    };
    try {
      const r = await api("PATCH", `/api/instances/${uid}`, body);
      document.querySelector('[data-testid="instance-name"]').textContent = r.name;
      document.title = `${r.name} · VISA`;
      toast("Saved: the keyboard and screen apply at the next connection");
      refresh();
    } catch (err) {
      const field = err.field === "screen_height" ? "screen_width" : err.field;
      const slot = field && editForm.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
      if (slot) {
        slot.textContent = err.message;
        slot.classList.remove("hidden");
      } else {
        toast(err.message, "error");
      }
    }
  });
}

// --- whether members may use the desktop while the owner is away (the owner's) -----------------
const accessForm = document.getElementById("member-access-form");
if (accessForm) {
  accessForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("PUT", `/api/instances/${uid}/member-access`, { mode: accessForm.elements.mode.value });
      toast("Saved");
      refresh();
    } catch (err) {
      toast(err.message, "error");
    }
  });
}

// --- public view links: the desktop, view only, for someone without an account (the owner's) ----
const viewForm = document.getElementById("view-link-form");
if (viewForm) {
  const list = document.getElementById("view-link-list");
  const render = (links) => {
    list.replaceChildren(...links.filter((l) => l.active).map((l) => {
      const li = document.createElement("li");
      li.dataset.viewLink = String(l.id);
      const what = document.createElement("span");
      const until = new Date(l.expires_at).toISOString().slice(0, 16).replace("T", " ");
      what.append(l.label, " ", Object.assign(document.createElement("span"), { className: "muted small", textContent: `until ${until} UTC` }));
      const revoke = Object.assign(document.createElement("button"), { type: "button", className: "btn small danger", textContent: "Revoke" });
      revoke.dataset.testid = "view-link-revoke";
      revoke.addEventListener("click", async () => {
        try {
          await api("DELETE", `/api/instances/${uid}/view-links/${l.id}`);
          toast("Revoked: the link opens nothing more");
          load();
        } catch (err) {
          toast(err.message, "error");
        }
      });
      li.append(what, revoke);
      return li;
    }));
  };
  const load = async () => {
    try {
      render(await api("GET", `/api/instances/${uid}/view-links`));
    } catch (err) {
      toast(err.message, "error");
    }
  };
  viewForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const made = await api("POST", `/api/instances/${uid}/view-links`, {
        label: viewForm.elements.label.value.trim(),
        hours: Number(viewForm.elements.hours.value),
      });
      const input = document.getElementById("view-link");
      input.value = made.url;
      document.getElementById("view-link-box").classList.remove("hidden");
      input.select();
      load();
    } catch (err) {
      toast(err.message, "error");
    }
  });
  load();
}
