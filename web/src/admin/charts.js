// The dashboard's usage charts: GET /api/admin/usage?span=day|week|month (samples taken by the
// scheduler's usage job), drawn with uPlot, one chart per measure, a line per cloud/flavour.
import uPlot from "../vendor/uplot/uPlot.esm.js";

const box = document.getElementById("usage-charts");
const status = document.querySelector(".usage-status");
const COLOURS = ["#2c6db3", "#d9822b", "#2f9e62", "#b3261e", "#7b52ab", "#1b9aaa", "#8a6d3b", "#c2185b"];
// measure -> title, how values are shown, and whether the active sessions ride along.
const CHARTS = [
  { key: "instances", title: "Instances", extra: "active_sessions" },
  { key: "cores", title: "Cores in use" },
  { key: "memory_mb", title: "Memory in use (GB)", scale: 1 / 1024 },
  { key: "gpus", title: "GPUs in use" },
];
let plots = [];

function width() {
  const w = box.clientWidth || 800;
  return w > 900 ? Math.floor(w / 2) - 24 : w - 16;
}

function chart(def, data) {
  const scale = def.scale || 1;
  const values = (list) => list.map((v) => (v === null ? null : +(v * scale).toFixed(2)));
  // A point is a step of the span (5 minutes over a day); samples come as often as the job is
  // set to run, which may be less often: the line joins the points that have samples, or a
  // sparse series would be a row of lone points, each too small to be drawn.
  const line = (s) => ({ spanGaps: true, ...s });
  const series = [{}, line({ label: "all", stroke: "#222", width: 2 })];
  const columns = [data.times, values(data.totals[def.key])];
  if (def.extra) {
    series.push(line({ label: "active sessions", stroke: COLOURS[1], width: 2, dash: [6, 4] }));
    columns.push(values(data.totals[def.extra]));
  }
  let i = 0;
  for (const [name, metrics] of Object.entries(data.by_flavour)) {
    if (!metrics[def.key].some((v) => v)) continue; // a flavour never used over the period
    series.push(line({ label: name, stroke: COLOURS[(i++ + 2) % COLOURS.length], width: 1 }));
    columns.push(values(metrics[def.key]));
  }
  const holder = document.createElement("div");
  holder.className = "usage-chart";
  holder.dataset.chart = def.key;
  holder.dataset.series = String(series.length - 1);
  holder.dataset.points = String(columns[1].filter((v) => v !== null).length);
  box.append(holder);
  const opts = {
    title: def.title, width: width(), height: 220, series,
    scales: { y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    axes: [{}, { size: 50 }],
  };
  return new uPlot(opts, columns, holder);
}

async function load(span) {
  for (const b of document.querySelectorAll("[data-span]")) b.setAttribute("aria-pressed", String(b.dataset.span === span));
  status.textContent = "Loading the samples…";
  let data;
  try {
    const resp = await fetch(`${box.dataset.api}?span=${span}`, { credentials: "same-origin", headers: { Accept: "application/json" } });
    data = await resp.json();
    if (!resp.ok) throw new Error(data.message || `request failed (${resp.status})`);
  } catch (err) {
    status.textContent = `The samples could not be read: ${err.message}`;
    return;
  }
  for (const p of plots) p.destroy();
  box.replaceChildren();
  const sampled = data.totals.instances.filter((v) => v !== null).length;
  status.textContent = sampled
    ? `${sampled} point${sampled > 1 ? "s" : ""} over the last ${span}, each the mean of the samples in ${Math.round(data.step_seconds / 60)} minutes.`
    : `No sample over the last ${span} yet: the scheduler takes one every few minutes.`;
  plots = CHARTS.map((def) => chart(def, data));
  box.dataset.drawn = span;
}

for (const b of document.querySelectorAll("[data-span]")) b.addEventListener("click", () => load(b.dataset.span));
if (box) load("day");
