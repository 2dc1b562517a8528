// The usage report's chart: GET /api/admin/usage/report with the page's filters, drawn with
// uPlot as bars, one chart per measure, the groups with the most core-hours first.
import uPlot from "../vendor/uplot/uPlot.esm.js";

const box = document.getElementById("usage-report-charts");
const MOST = 20; // groups drawn; the table lists them all
const CHARTS = [
  { key: "core_hours", title: "Core-hours", colour: "#2c6db3" },
  { key: "memory_gb_hours", title: "Memory GB-hours", colour: "#2f9e62" },
  { key: "gpu_hours", title: "GPU-hours", colour: "#d9822b" },
];

function chart(def, rows) {
  const names = rows.map((r) => (r.key === null ? "(none)" : r.key));
  const holder = document.createElement("div");
  holder.className = "usage-chart";
  holder.dataset.chart = def.key;
  holder.dataset.bars = String(rows.length);
  box.append(holder);
  const w = box.clientWidth || 800;
  const opts = {
    title: def.title, width: w > 900 ? Math.floor(w / 3) - 24 : w - 16, height: 240,
    scales: { x: { time: false, range: (u, lo, hi) => [lo - 0.5, hi + 0.5] },
              y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
    axes: [{ values: (u, ticks) => ticks.map((i) => names[i] ?? ""), rotate: -45, size: 60 }, { size: 60 }],
    series: [{},
             { label: def.title, fill: def.colour, stroke: def.colour, paths: uPlot.paths.bars({ size: [0.7, 60] }), points: { show: false } }],
    legend: { show: false },
  };
  return new uPlot(opts, [rows.map((_, i) => i), rows.map((r) => r[def.key])], holder);
}

async function load() {
  let data;
  try {
    const resp = await fetch(box.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } });
    data = await resp.json();
    if (!resp.ok) throw new Error(data.message || `request failed (${resp.status})`);
  } catch (err) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = `The chart could not be drawn: ${err.message}`;
    box.replaceChildren(p);
    return;
  }
  const rows = data.rows.slice(0, MOST);
  if (rows.length) {
    for (const def of CHARTS) if (rows.some((r) => r[def.key] > 0)) chart(def, rows);
  }
  box.dataset.drawn = "true";
}

if (box) load();
