// The support page: ask to join a machine; the answer arrives live (joining shows up in the
// "instances" event, a prompt that timed out is asked again, which then lets support in).
import { api, onEvent, toast } from "./app.js";

const rowOf = (uid) => document.querySelector(`tr[data-support-uid="${CSS.escape(uid)}"]`);

function show(row, access, text = "") {
  row.dataset.access = access;
  row.querySelector('[data-role="open"]').classList.toggle("hidden", access !== "member");
  row.querySelector('[data-action="ask-support"]').classList.toggle("hidden", access !== "none");
  row.querySelector('[data-role="status"]').textContent = text;
}

const timers = new Map();

async function ask(uid) {
  const row = rowOf(uid);
  if (!row) return;
  clearTimeout(timers.get(uid));
  try {
    const answer = await api("POST", `/api/instances/${encodeURIComponent(uid)}/support`);
    if (answer.status === "joined") {
      show(row, "member", "You may connect now");
      return;
    }
    show(row, "pending", "Waiting for the owner's answer");
    if (answer.prompt_until) {
      // Past the prompt, asking again joins unless the owner must answer (the server decides).
      const left = new Date(answer.prompt_until).getTime() - Date.now();
      const wait = left > 0 ? left + 1000 : 15000; // a staff owner's answer: look again now and then
      timers.set(uid, setTimeout(() => ask(uid), wait));
    }
  } catch (err) {
    if (err.status === 403) show(row, "refused", err.message);
    else if (err.status === 409) show(row, "member", "You may connect now");
    else toast(err.message, "error");
  }
}

document.addEventListener("click", (ev) => {
  const btn = ev.target.closest('button[data-action="ask-support"]');
  if (btn) ask(btn.dataset.uid);
});

// Becoming a member puts the machine in this user's list: the owner accepted.
onEvent("instances", (d) => {
  for (const uid of d.uids) {
    const row = rowOf(uid);
    if (row && row.dataset.access === "pending") {
      clearTimeout(timers.get(uid));
      show(row, "member", "The owner accepted: you may connect now");
    }
  }
});
onEvent("ready", (d) => {
  for (const uid of d.uids) {
    const row = rowOf(uid);
    if (row && row.dataset.access === "pending") show(row, "member", "You may connect now");
  }
});
