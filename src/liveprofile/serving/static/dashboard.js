// liveprofile dashboard: polls the read API with the read token and draws SVG charts.
// No external code: the page must work on machines without internet access.
"use strict";

const COLORS = ["#2f6fdf", "#e0803a", "#2e9e6a", "#b04fc4", "#c8433b", "#7a8597", "#1fa3b5"];
const STATS_EVERY_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let lastSeq = null;

// ---- token: from the URL fragment (#token=...) or the form, kept in sessionStorage ----------

function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

function takeTokenFromFragment() {
  const params = fragment();
  if (params.has("token")) {
    sessionStorage.setItem("liveprofile.token", params.get("token"));
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
}

function token() {
  return sessionStorage.getItem("liveprofile.token") || "";
}

function askForToken(message) {
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("status").textContent = "needs the read token";
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (r.status === 401) {
    askForToken(token() ? "token refused" : "");
    throw new Error("unauthorized");
  }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---- small DOM and number helpers --------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(x, digits = 3) {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  return x.toFixed(digits);
}

function date(epochSeconds, withTime) {
  if (epochSeconds === null || epochSeconds === undefined) return "–";
  const iso = new Date(epochSeconds * 1000).toISOString();
  return withTime ? iso.slice(0, 16).replace("T", " ") : iso.slice(0, 10);
}

// ---- charts ------------------------------------------------------------------------------

// A line chart: series = [{name, points: [[x, y], ...]}]; points with y === null leave a gap.
// Every drawn point is an SVG circle with class "pt" and data-series, so it can be counted.
function lineChart(container, series, opts) {
  const W = opts.width || 560, H = opts.height || 190;
  const pad = { l: 46, r: 12, t: opts.title ? 20 : 8, b: opts.axes === false ? 4 : 24 };
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
  container.replaceChildren();
  if (!pts.length) {
    container.append(el("p", { class: "empty" }, opts.empty || "no data yet"));
    return;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [opts.yMin ?? Math.min(...pts.map((p) => p[1])),
                  opts.yMax ?? Math.max(...pts.map((p) => p[1]))];
  const marks = (opts.markers || []).filter((m) => m.x >= x0);
  if (marks.length) x1 = Math.max(x1, ...marks.map((m) => m.x));
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  if (y0 === y1) { y0 = y0 - (Math.abs(y0) || 1) * 0.1; y1 = y1 + (Math.abs(y1) || 1) * 0.1; }
  const sx = (x) => pad.l + ((x - x0) / (x1 - x0)) * (W - pad.l - pad.r);
  const sy = (y) => H - pad.b - ((y - y0) / (y1 - y0)) * (H - pad.t - pad.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", class: opts.cls || "" });
  if (opts.title) root.append(svg("text", { x: pad.l, y: 12, class: "title" }, opts.title));
  if (opts.axes !== false) {
    const axis = svg("g", { class: "axis" });
    for (let i = 0; i <= 4; i++) {
      const y = y0 + ((y1 - y0) * i) / 4;
      axis.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: sy(y), y2: sy(y), class: "grid-line" }));
      axis.append(svg("text", { x: pad.l - 6, y: sy(y) + 3, "text-anchor": "end" },
        fmt(y, y1 - y0 >= 10 ? 0 : 2)));
    }
    const ticks = Math.min(5, new Set(pts.map((p) => p[0])).size);
    for (let i = 0; i < ticks; i++) {
      const x = ticks === 1 ? pts[0][0] : x0 + ((x1 - x0) * i) / (ticks - 1);
      const anchor = i === 0 ? "start" : i === ticks - 1 ? "end" : "middle";
      axis.append(svg("text", { x: sx(x), y: H - 6, "text-anchor": anchor }, opts.xFormat(x)));
    }
    root.append(axis);
  }
  // vertical markers (drift detections): class "marker", data-ts the event time
  for (const m of marks) {
    const line = svg("line", { x1: sx(m.x), x2: sx(m.x), y1: pad.t, y2: H - pad.b,
                               class: "marker", "data-ts": m.x });
    line.append(svg("title", {}, m.label));
    root.append(line);
  }
  series.forEach((s, i) => {
    const color = s.color || COLORS[i % COLORS.length];
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (y === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
      pen = true;
    }
    root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    if (opts.dots === false) return;
    for (const [x, y] of s.points) {
      if (y === null) continue;
      const dot = svg("circle", { cx: sx(x), cy: sy(y), r: 3, fill: color, class: "pt",
                                  "data-series": s.name, "data-y": y });
      dot.append(svg("title", {}, `${s.name} ${opts.xFormat(x)}: ${fmt(y, 4)}`));
      root.append(dot);
    }
  });
  container.append(root);
  if (series.length > 1 || opts.legend) {
    const legend = el("div", { class: "legend" });
    series.forEach((s, i) => {
      const sw = el("i");
      sw.style.background = s.color || COLORS[i % COLORS.length];
      legend.append(el("span", {}, sw, s.name));
    });
    container.append(legend);
  }
}

// Horizontal bars: rows = [[label, value], ...], largest first.
function barChart(container, rows, empty) {
  container.replaceChildren();
  if (!rows.length) {
    container.append(el("p", { class: "empty" }, empty));
    return;
  }
  const max = Math.max(...rows.map((r) => r[1])) || 1;
  const bars = el("div", { class: "bars" });
  for (const [label, value] of rows) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${Math.max(1, (100 * value) / max)}%`;
    bars.append(el("div", { class: "bar", "data-tag": label },
      el("span", { class: "label", title: label }, label),
      el("div", { class: "track" }, fill),
      el("span", { class: "num" }, fmt(value, 3))));
  }
  container.append(bars);
}

function table(node, head, rows) {
  node.replaceChildren(el("tr", {}, ...head.map((h, i) => el("th", i ? { class: "num" } : {}, h))));
  for (const row of rows) {
    node.append(el("tr", {}, ...row.map((c, i) => el("td", i ? { class: "num" } : {}, c))));
  }
}

// ---- the live panels ---------------------------------------------------------------------

function renderStats(s) {
  const rate = s.throughput.events_per_s;
  $("kpi-throughput").textContent = rate === null ? "–" : fmt(Math.round(rate));
  $("kpi-events").textContent = fmt(s.events);
  $("kpi-dead-letters").textContent = fmt(s.dead_letters);
  $("kpi-duplicates").textContent = fmt(s.duplicates);
  $("kpi-profiles").textContent = fmt(s.profiles);
  $("kpi-watermark").textContent = date(s.watermark, true);
  lineChart($("throughput-chart"), [{ name: "events/s", points: s.throughput.history }],
    { width: 200, height: 40, axes: false, dots: false, yMin: 0, xFormat: String,
      empty: "sampling…" });
  const parts = s.partitions && s.partitions.length ? ` · ${s.partitions.length} partitions` : "";
  $("status").textContent =
    `checkpoint #${s.seq}${parts} · updated ${new Date().toLocaleTimeString()}`;
}

function renderTimeline(t, summaries) {
  const box = $("tasks");
  box.replaceChildren();
  for (const [task, windows] of Object.entries(t.tasks)) {
    const sum = summaries[task] || {};
    const card = el("div", { class: "card task", "data-task": task });
    card.append(el("h3", {}, task));
    // a regression task (a value target) has MAE and RMSE where the others have AUC and log loss
    const regression = sum.mae !== undefined;
    const scores = regression
      ? ["examples ", el("b", {}, fmt(sum.n)), " · MAE ", el("b", {}, fmt(sum.mae)),
         " · RMSE ", el("b", {}, fmt(sum.rmse)),
         " · mean target ", el("b", {}, fmt(sum.mean_target))]
      : ["examples ", el("b", {}, fmt(sum.n)), " · AUC ", el("b", {}, fmt(sum.auc)),
         " · log loss ", el("b", {}, fmt(sum.logloss)),
         " · positive rate ", el("b", {}, fmt(sum.positive_rate))];
    card.append(el("div", { class: "task-summary" }, ...scores,
      " · windows ", el("b", {}, windows.length),
      " · drifts ", el("b", { class: "drifts" }, fmt(sum.drift ? sum.drift.detections : 0))));
    box.append(card);
    const empty = "no examples yet";
    if (!windows.length) {
      card.append(el("p", { class: "empty" }, empty));
      continue;
    }
    const xs = windows.map((w) => w.start);
    const markers = ((sum.drift && sum.drift.events) || []).map((e) => ({
      x: e.ts, label: `drift detected ${date(e.ts, true)} after ${fmt(e.seen)} examples ` +
        `(statistic ${fmt(e.statistic, 1)}, mean loss ${fmt(e.mean_loss, 3)})` }));
    if (regression) {
      const mae = el("div", { class: "chart mae" });
      const rmse = el("div", { class: "chart rmse" });
      card.append(mae, rmse);
      lineChart(mae, [{ name: task, points: windows.map((w, i) => [xs[i], w.mae]) }],
        { title: "MAE per window", yMin: 0, xFormat: (x) => date(x), empty,
          cls: "mae-chart", markers });
      lineChart(rmse, [{ name: task, color: COLORS[1], points: windows.map((w, i) => [xs[i], w.rmse]) }],
        { title: "RMSE per window", yMin: 0, xFormat: (x) => date(x), empty,
          cls: "rmse-chart", markers });
      continue;
    }
    const auc = el("div", { class: "chart auc" });
    const loss = el("div", { class: "chart logloss" });
    card.append(auc, loss);
    lineChart(auc, [{ name: task, points: windows.map((w, i) => [xs[i], w.auc]) }],
      { title: "AUC per window", yMin: 0, yMax: 1, xFormat: (x) => date(x), empty,
        cls: "auc-chart", markers });
    lineChart(loss, [{ name: task, color: COLORS[1], points: windows.map((w, i) => [xs[i], w.logloss]) }],
      { title: "log loss per window", yMin: 0, xFormat: (x) => date(x), empty,
        cls: "logloss-chart", markers });
  }
  const seg = $("segments");
  if (t.segments === null) {
    seg.replaceChildren(el("p", { class: "empty" }, t.segments_error || "no segments declared"));
    return;
  }
  const names = [...new Set(t.segments.flatMap(([, sizes]) => Object.keys(sizes)))].sort();
  const series = names.map((name) => ({
    name, points: t.segments.map(([ts, sizes]) => [ts, sizes[name] ?? 0]) }));
  const chart = el("div", { class: "chart" });
  seg.replaceChildren(chart);
  lineChart(chart, series, { width: 1100, height: 220, yMin: 0, xFormat: (x) => date(x, true),
    legend: true, cls: "segments-chart", empty: "no segment sizes committed yet" });
}

async function refresh() {
  if (!token()) { askForToken(); return; }
  try {
    const stats = await api("/v1/stats");
    $("token-form").hidden = true;
    renderStats(stats);
    if (stats.seq !== lastSeq) {
      renderTimeline(await api("/v1/metrics/timeline"), stats.tasks);
      lastSeq = stats.seq;
    }
  } catch (err) {
    if (err.message !== "unauthorized") $("status").textContent = "error: " + err.message;
  }
}

// ---- profile viewer ----------------------------------------------------------------------

async function showProfile(user) {
  $("profile-error").textContent = "";
  let p;
  try {
    p = await api("/v1/profiles/" + encodeURIComponent(user));
  } catch (err) {
    $("profile").hidden = true;
    $("profile-error").textContent = err.message;
    return;
  }
  const head = $("profile-head");
  head.replaceChildren();
  const facts = [["user", p.user], ["lifecycle", p.lifecycle], ["events", fmt(p.events)],
    ["first seen", date(p.first_seen, true)], ["last seen", date(p.last_seen, true)],
    ["purchases", fmt(p.frequency)], ["monetary", fmt(p.monetary, 2)],
    ["RFM", p.rfm ? `${p.rfm.recency}-${p.rfm.frequency}-${p.rfm.monetary}` : "–"]];
  for (const [k, v] of facts) head.append(el("div", {}, k, el("b", {}, v)));
  const tags = Object.entries(p.interests || {}).sort((a, b) => b[1] - a[1]).slice(0, 15);
  barChart($("interests"), tags, "no interest tags yet");
  const types = Object.keys(p.counts || {}).sort();
  table($("counters"), ["type", "count", "decayed"],
    types.map((k) => [k, fmt(p.counts[k]), fmt((p.decayed_counts || {})[k] ?? null)]));
  const scores = Object.entries(p.scores || {});
  const sc = $("scores");
  sc.replaceChildren(scores.length ? el("table", { class: "table" }) : el("p", { class: "empty" }, "no scores"));
  if (scores.length) table(sc.firstChild, ["model", "score"], scores.map(([k, v]) => [k, fmt(v, 4)]));
  const segs = $("profile-segments");
  segs.replaceChildren();
  if (Array.isArray(p.segments) || (p.segments && typeof p.segments === "object")) {
    const names = Array.isArray(p.segments) ? p.segments : Object.keys(p.segments);
    if (names.length) names.forEach((s) => segs.append(el("span", { class: "chip" }, s)));
    else segs.append(el("p", { class: "empty" }, "in no segment"));
  } else {
    segs.append(el("p", { class: "empty" }, "no segments in this profile"));
  }
  const recent = $("recent");
  if (Array.isArray(p.recent) && p.recent.length) {
    const t = el("table", { class: "table" });
    recent.replaceChildren(t);
    table(t, ["time (UTC)", "type", "item", "value"],
      p.recent.map((e) => [date(e.ts, true), e.type, e.item_id ?? "–", fmt(e.value ?? null, 2)]));
  } else {
    recent.replaceChildren(el("p", { class: "empty" },
      Array.isArray(p.recent) ? "no recent events" : "recent events are not kept by this store"));
  }
  $("profile").hidden = false;
}

// ---- wiring ------------------------------------------------------------------------------

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("liveprofile.token", $("token").value.trim());
  lastSeq = null;
  refresh();
});
$("profile-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const user = $("user").value.trim();
  if (user) showProfile(user);
});

takeTokenFromFragment();
const initialUser = fragment().get("user");
if (initialUser && token()) { $("user").value = initialUser; showProfile(initialUser); }
refresh();
setInterval(refresh, STATS_EVERY_MS);
