// canarygate's dashboard: reads (and, for operators, steers) through the admin API.
// No framework and no build step: state in a few variables, panels redrawn as HTML strings
// with inline SVG charts, polling every POLL_MS. Every text from the server is escaped.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "canarygate-token";
const CHANGES = new Set(["start", "advance", "pause", "resume", "set_weight", "rollback",
  "promote", "await_promotion", "restore"]);
const COLORS = { baseline: "#2f6fb0", candidate: "#d9822b", fallback: "#8e5ba8",
  pinned: "#6b7480" };
const LEVEL_COLORS = { "-1": "#c5cad1", "0": "#3a9a5b", "1": "#e0b030", "2": "#cc3d3d" };
const LEVEL_NAMES = { "-1": "window too small", "0": "ok", "1": "warn", "2": "alert" };
const MAX_COLUMNS = 90; // heat map columns, however long the history

let me = null; // {name, role, models}
let view = { model: null, history: [], features: {}, historyModel: null };
let busy = false;

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g,
  (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v)) ? "-"
  : (typeof v === "number" ? Number(v.toPrecision(digits)).toString() : String(v));
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

async function api(path, body) {
  const init = { headers: { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    const error = new Error(`${response.status}: ${data.error || response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

// -- charts --------------------------------------------------------------------------------

// series: [{name, color, points: [[t, v], ...], dashed, step}]; null values break the line.
function lineChart(series, { unit = "", height = 150, yMax = null } = {}) {
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  if (all.length === 0) return '<p class="muted">no data yet</p>';
  const W = 600, H = height, L = 44, R = 8, T = 8, B = 18;
  const ts = all.map((p) => p[0]), vs = all.map((p) => p[1]);
  const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1);
  let lo = Math.min(0, ...vs), hi = yMax ?? Math.max(...vs);
  if (hi <= lo) hi = lo + 1;
  const x = (t) => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img">`;
  for (const f of [0, 0.5, 1]) {
    const v = lo + f * (hi - lo);
    svg += `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e8ec"/>`;
    svg += `<text x="${L - 4}" y="${y(v) + 3}" text-anchor="end">${esc(fmt(v))}${esc(unit)}</text>`;
  }
  svg += `<text x="${L}" y="${H - 4}">${clock(t0)}</text>`;
  svg += `<text x="${W - R}" y="${H - 4}" text-anchor="end">${clock(t1)}</text>`;
  for (const s of series) {
    let d = "", pen = false, last = null;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) { pen = false; continue; }
      if (s.step && pen && last !== null) d += `L${x(t).toFixed(1)},${y(last).toFixed(1)}`;
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true; last = v;
    }
    if (d) {
      svg += `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"` +
        `${s.dashed ? ' stroke-dasharray="5 3"' : ""}><title>${esc(s.name)}</title></path>`;
    }
    // The latest value as a dot: a lone judgement (a rollback's) has no line to draw.
    const lastPoint = s.points.filter((p) => p[1] !== null && p[1] !== undefined).at(-1);
    if (lastPoint) {
      svg += `<circle cx="${x(lastPoint[0]).toFixed(1)}" cy="${y(lastPoint[1]).toFixed(1)}" ` +
        `r="2.5" fill="${s.color}"><title>${esc(s.name)} ${esc(fmt(lastPoint[1]))} at ` +
        `${clock(lastPoint[0])}</title></circle>`;
    }
  }
  svg += "</svg>";
  const legend = series.map((s) =>
    `<span><i style="background:${s.color}"></i>${esc(s.name)}</span>`).join("");
  return svg + `<div class="legend">${legend}</div>`;
}

function heatMap(points, features, variant) {
  const cols = points.filter((p) => p.drift && p.drift[variant]);
  const names = features[variant] || [];
  if (cols.length === 0 || names.length === 0) return '<p class="muted">no drift window yet</p>';
  const stride = Math.ceil(cols.length / MAX_COLUMNS);
  const shown = cols.filter((_, i) => (cols.length - 1 - i) % stride === 0);
  const L = 150, cw = Math.max(4, Math.floor((600 - L) / shown.length)), ch = 12;
  const W = L + cw * shown.length, H = ch * names.length + 16;
  let svg = `<svg class="heat" viewBox="0 0 ${W} ${H}" width="${W * 1.4}" role="img">`;
  names.forEach((name, r) => {
    svg += `<text x="${L - 4}" y="${r * ch + 9}" text-anchor="end">${esc(name)}</text>`;
  });
  shown.forEach((p, c) => {
    const d = p.drift[variant];
    names.forEach((name, r) => {
      const level = String(d.levels[r] ?? -1);
      svg += `<rect x="${L + c * cw}" y="${r * ch}" width="${cw - 1}" height="${ch - 1}" ` +
        `fill="${LEVEL_COLORS[level]}"><title>${esc(name)} at ${clock(p.t)}: ` +
        `${LEVEL_NAMES[level]}, PSI ${esc(fmt(d.psi[r]))} (version ${esc(d.version)})` +
        "</title></rect>";
    });
  });
  svg += `<text x="${L}" y="${H - 3}">${clock(shown[0].t)}</text>`;
  svg += `<text x="${W}" y="${H - 3}" text-anchor="end">${clock(shown.at(-1).t)}</text></svg>`;
  const legend = Object.keys(LEVEL_NAMES).map((k) =>
    `<span><i style="background:${LEVEL_COLORS[k]}"></i>${LEVEL_NAMES[k]}</span>`).join("");
  return svg + `<div class="legend">${legend}</div>`;
}

function timeline(decisions, now) {
  const changes = decisions.filter((d) => CHANGES.has(d.action));
  if (changes.length === 0) return '<p class="muted">no rollout decisions yet</p>';
  const t0 = changes[0].time, span = Math.max(now - t0, 1), W = 1200, H = 34;
  const color = { progressing: "#9cc3ea", shadow: "#c9b6e4", paused: "#f1d27a",
    awaiting_promotion: "#f1d27a", promoted: "#8fcf9f", rolled_back: "#e79a9a",
    idle: "#e0e3e7" };
  let svg = `<svg viewBox="0 0 ${W} ${H}" role="img">`;
  changes.forEach((d, i) => {
    const end = i + 1 < changes.length ? changes[i + 1] : null;
    const a = (d.time - t0) / span * W, b = ((end ? end.time : now) - t0) / span * W;
    const ended = end ? `ended by ${end.action} (${end.actor}): ${end.reason}` : "under way";
    svg += `<rect x="${a}" y="2" width="${Math.max(b - a, 1.5)}" height="20" ` +
      `fill="${color[d.phase] || "#e0e3e7"}" stroke="#fff"><title>${esc(d.phase)} at ` +
      `${esc(fmt(d.weight))} % from ${clock(d.time)}; ${esc(ended)}</title></rect>`;
    if (b - a > 28) {
      svg += `<text x="${a + 3}" y="16">${esc(fmt(d.weight))}%</text>`;
    }
  });
  svg += `<text x="0" y="${H - 1}">${clock(t0)}</text>`;
  svg += `<text x="${W}" y="${H - 1}" text-anchor="end">${clock(now)}</text></svg>`;
  return svg;
}

// -- panels --------------------------------------------------------------------------------

const panel = (name, title, body) =>
  `<section class="panel" data-panel="${name}"><h2>${esc(title)}</h2>${body}</section>`;
const phase = (p) => `<span class="phase ${esc(p)}">${esc(p)}</span>`;
const stepOf = (r) => r.step_number ? `${r.step_number} of ${r.steps.length}` : "-";

async function renderOverview() {
  const { rollouts } = await api("/admin/rollouts");
  const last = await Promise.all(rollouts.map((r) =>
    api(`/admin/rollouts/${encodeURIComponent(r.model)}/decisions?limit=100`)));
  const rows = rollouts.map((r, i) => {
    // The last decision that changed something; holds repeat what "waiting for" says.
    const d = last[i].decisions.filter((x) => x.action !== "hold").at(-1);
    const decision = d ? `${esc(d.action)} by ${esc(d.actor)} at ${clock(d.time)}: ` +
      `${esc(d.reason)}` : "-";
    return `<tr class="link" data-model="${esc(r.model)}"><td>${esc(r.model)}</td>` +
      `<td>${phase(r.phase)}</td><td>${stepOf(r)}</td><td>${esc(fmt(r.weight))} %</td>` +
      `<td>${esc(r.baseline)}</td><td>${esc(r.candidate || "-")}</td>` +
      `<td>${esc(r.waiting ? r.waiting.text : "")}</td><td>${decision}</td></tr>`;
  }).join("");
  $("overview").innerHTML = "<h2>Models</h2><table><thead><tr><th>model</th><th>phase</th>" +
    "<th>step</th><th>weight</th><th>baseline</th><th>candidate</th><th>waiting for</th>" +
    `<th>last decision</th></tr></thead><tbody>${rows}</tbody></table>`;
}

async function loadHistory(model) {
  if (view.historyModel !== model) view = { ...view, history: [], historyModel: model };
  const since = view.history.length ? view.history.at(-1).t : 0;
  const h = await api(`/admin/rollouts/${encodeURIComponent(model)}/history?since=${since}`);
  view.history = view.history.concat(h.points).slice(-2200); // the server's own bound
  view.features = h.drift_features;
}

function variantCharts(points) {
  const variants = [...new Set(points.flatMap((p) => Object.keys(p.variants)))];
  const of = (v, key, scale = 1) => points.map((p) =>
    [p.t, p.variants[v] && p.variants[v][key] !== null && p.variants[v][key] !== undefined
      ? p.variants[v][key] * scale : null]);
  const qps = variants.map((v) => ({ name: v, color: COLORS[v] || "#555", points: of(v, "qps") }));
  const errs = variants.map((v) => ({ name: v, color: COLORS[v] || "#555",
    points: of(v, "error_rate", 100) }));
  const dash = { p50: null, p95: "5 3", p99: "2 2" };
  const lat = variants.flatMap((v) => Object.keys(dash).map((q) => ({
    name: `${v} ${q}`, color: COLORS[v] || "#555", dashed: dash[q] !== null,
    points: of(v, q) })));
  return panel("qps", "Requests per second", lineChart(qps)) +
    panel("errors", "Error rate", lineChart(errs, { unit: "%" })) +
    panel("latency", "Latency p50 / p95 / p99", lineChart(lat, { unit: " ms" }));
}

function gateCharts(points) {
  const gates = [...new Set(points.flatMap((p) => Object.keys(p.gates)))];
  if (gates.length === 0) return '<p class="muted">no judgement yet in this history</p>';
  return '<div class="gates">' + gates.map((g) => {
    const latest = [...points].reverse().find((p) => p.gates[g]).gates[g];
    const stat = points.map((p) => [p.t, p.gates[g] ? p.gates[g].statistic : null]);
    const thr = points.map((p) => [p.t, p.gates[g] ? p.gates[g].threshold : null]);
    return `<div data-gate="${esc(g)}"><b>${esc(g)}</b> <span class="muted">` +
      `${esc(latest.verdict)}: ${esc(fmt(latest.statistic))} against ` +
      `${esc(fmt(latest.threshold))}</span>` + lineChart([
        { name: "statistic", color: "#1d232b", points: stat },
        { name: "threshold", color: "#cc3d3d", points: thr, dashed: true }], { height: 110 }) +
      "</div>";
  }).join("") + "</div>";
}

function feedbackChart(points) {
  const versions = [...new Set(points.flatMap((p) => Object.keys(p.feedback || {})))];
  const series = versions.flatMap((v, i) => ["accuracy", "mae"].map((k) => ({
    name: `version ${v} ${k}`, color: ["#2f6fb0", "#d9822b", "#3a9a5b", "#8e5ba8"][i % 4],
    dashed: k === "mae",
    points: points.map((p) => [p.t, p.feedback && p.feedback[v] ? p.feedback[v][k] ?? null
      : null]) }))).filter((s) => s.points.some((q) => q[1] !== null));
  return series.length ? lineChart(series) : '<p class="muted">no feedback labels yet</p>';
}

function logTable(decisions) {
  const rows = [...decisions].reverse().slice(0, 60).map((d) =>
    `<tr class="${d.action === "hold" ? "hold" : ""}"><td>${clock(d.time)}</td>` +
    `<td>${esc(d.action)}</td><td>${esc(d.actor)}</td><td>${esc(d.phase || "")}</td>` +
    `<td>${esc(fmt(d.weight))}</td><td>${esc(d.reason)}</td></tr>`).join("");
  return "<table><thead><tr><th>time</th><th>action</th><th>by</th><th>phase</th>" +
    `<th>weight</th><th>reason</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function actionsPanel(r, versions) {
  const options = versions.filter((v) => v.version !== r.baseline).map((v) =>
    `<option value="${esc(v.version)}">${esc(v.version)}</option>`).join("");
  const steps = r.schedule.steps.join(",");
  return panel("actions", "Actions", `<div class="actions">
    <label>reason<input id="reason" size="36" placeholder="why (goes to the decision log)">
    </label>
    <fieldset><label>weight %<input id="weight" type="number" min="0" max="100" step="1"
      value="${esc(r.weight)}"></label><button data-action="weight">set weight</button>
    </fieldset>
    <button data-action="pause">pause</button><button data-action="resume">resume</button>
    <button data-action="promote">promote</button>
    <button data-action="rollback" class="danger">roll back</button>
    <fieldset><label>version<select id="start-version">${options}</select></label>
      <label>steps<input id="start-steps" size="14" value="${esc(steps)}"></label>
      <label>min step s<input id="start-seconds" type="number" min="0" size="5"
        value="${esc(r.schedule.min_step_seconds)}"></label>
      <button data-action="start">start</button></fieldset>
  </div><p id="message"></p>`);
}

async function renderModel(model) {
  const m = encodeURIComponent(model);
  const operator = me.role === "operator";
  const [r, log, versions] = await Promise.all([api(`/admin/rollouts/${m}`),
    api(`/admin/rollouts/${m}/decisions?limit=500`),
    operator ? api(`/admin/models/${m}/versions`) : Promise.resolve({ versions: [] }),
    loadHistory(model)]);
  const pts = view.history, now = Date.now() / 1000;
  const split = lineChart([
    { name: "set weight", color: "#1d232b", step: true, points: pts.map((p) => [p.t, p.weight]) },
    { name: "observed share", color: COLORS.candidate,
      points: pts.map((p) => [p.t, p.observed_share]) }], { unit: "%" });
  const agreement = lineChart([{ name: "shadow agreement", color: "#8e5ba8",
    points: pts.map((p) => [p.t, p.agreement]) }], { yMax: 1 });
  const latestDrift = [...pts].reverse().find((p) => p.drift && Object.keys(p.drift).length);
  const variant = latestDrift && latestDrift.drift.candidate ? "candidate" : "baseline";
  const figures = r.figures && r.figures.gate ? `<p>decisive gate: <b>${esc(r.figures.gate)}
    </b> ${esc(r.figures.verdict || "")}, statistic ${esc(fmt(r.figures.statistic))},
    threshold ${esc(fmt(r.figures.threshold))}</p>` : "";
  if ($("model").dataset.model !== model) {
    // Built once per model, so what a person types is not redrawn away by the polling.
    $("model").dataset.model = model;
    $("model").innerHTML = '<a href="#" class="back">&larr; all models</a>' +
      '<div id="m-status"></div>' +
      (operator ? actionsPanel(r, versions.versions) : "") + '<div id="m-panels"></div>';
  }
  $("m-status").innerHTML = panel("status", `${model}`, `<p>${phase(r.phase)} step ` +
      `${stepOf(r)}, weight ${esc(fmt(r.weight))} %, baseline ${esc(r.baseline)}, candidate ` +
      `${esc(r.candidate || "-")}</p><p>${esc(r.reason)}</p>` +
      (r.waiting ? `<p>waiting for: ${esc(r.waiting.text)}</p>` : "") + figures);
  $("m-panels").innerHTML = panel("timeline", "Ramp", timeline(log.decisions, now)) +
    '<div class="grid">' + panel("split", "Set weight against observed share", split) +
    variantCharts(pts) + panel("agreement", "Shadow agreement", agreement) +
    panel("feedback", "Accuracy / MAE per version (feedback)", feedbackChart(pts)) + "</div>" +
    panel("gates", "Gates: statistic against threshold", gateCharts(pts)) +
    panel("drift", `Drift per feature (${variant})`, heatMap(pts, view.features, variant)) +
    panel("log", "Decisions", logTable(log.decisions));
}

// -- actions -------------------------------------------------------------------------------

async function act(action) {
  const m = encodeURIComponent(view.model);
  const reason = $("reason").value;
  let path = `/admin/rollouts/${m}/${action}`, body = { reason };
  if (action === "weight") body.weight = Number($("weight").value);
  if (action === "start") {
    body.candidate = $("start-version").value;
    body.schedule = { steps: $("start-steps").value.split(",").map(Number),
      min_step_seconds: Number($("start-seconds").value) };
  }
  try {
    const r = await api(path, body);
    $("message").textContent = `${action}: now ${r.phase} at ${fmt(r.weight)} %`;
  } catch (e) {
    $("message").innerHTML = `<span class="error">${esc(e.message)}</span>`;
  }
  await refresh();
}

// -- the page ------------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#model=(.+)$/);
  view.model = match ? decodeURIComponent(match[1]) : null;
  $("overview").hidden = view.model !== null;
  $("model").hidden = view.model === null;
  if (view.model === null) $("model").dataset.model = "";
}

async function refresh() {
  if (busy || !me) return;
  busy = true;
  try {
    if (view.model) await renderModel(view.model); else await renderOverview();
    $("updated").textContent = `updated ${clock(Date.now() / 1000)}`;
  } catch (e) {
    if (e.status === 401 || e.status === 403) signOut(e.message);
    else $("updated").textContent = `update failed: ${e.message}`;
  } finally {
    busy = false;
  }
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  $("login").hidden = false;
  $("overview").hidden = $("model").hidden = $("signout").hidden = true;
  $("who").textContent = "";
  $("login-error").textContent = why || "";
}

async function signIn() {
  try {
    me = await api("/admin/whoami");
  } catch (e) {
    signOut(e.message);
    return;
  }
  $("login").hidden = true;
  $("signout").hidden = false;
  $("who").textContent = `${me.name} (${me.role})`;
  route();
  await refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    signIn();
  });
  $("signout").addEventListener("click", () => signOut(""));
  $("overview").addEventListener("click", (e) => {
    const row = e.target.closest("tr[data-model]");
    if (row) location.hash = `model=${encodeURIComponent(row.dataset.model)}`;
  });
  $("model").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-action]");
    if (button) act(button.dataset.action);
  });
  window.addEventListener("hashchange", () => { route(); refresh(); });
  if (sessionStorage.getItem(TOKEN_KEY)) signIn(); else signOut("");
  setInterval(refresh, POLL_MS);
});
