// poolgate admin UI: plain JavaScript, no build step. Talks only to the
// REST API; live status arrives as server-sent events. The configuration
// editor edits the desired config as the API's JSON model and never more:
// the appliance validates it (field errors come back by path and are shown
// next to the field), shows what would change, and applies it on request.
// The pool-template wizard (Front End, Director, Edge internal) builds a
// Skype for Business / Lync pool into the config in use and goes through
// the same preview and Apply.
// System → Network applies a network change at once and counts down to its
// deadline; a change that moves the admin address is confirmed on arrival
// at the new address (`#confirm=network:ID`, `#confirm=admin`).
// System → High availability pairs two appliances, swaps their roles and
// keeps this one's VRRP settings; the role is in the header of every page,
// and the standby's pool and member change buttons are disabled, with a
// banner linking to the active.
// Statistics charts the appliance's last hour (inline SVG, drawn by the
// same `chart` as the Status tab's sparklines), polled while its tab is open.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let stream = null;

// ---------------------------------------------------------------- helpers

function show(section) {
  for (const id of ["setup", "login", "dashboard"]) $(id).hidden = id !== section;
  $("logout").hidden = section !== "dashboard";
  $("tabs").hidden = section !== "dashboard";
}

// `timeoutMs`: give up (throw) when no answer comes in that long.
async function request(method, path, body, contentType, extra, timeoutMs) {
  const headers = { "Accept": "application/json", ...(extra || {}) };
  if (body !== undefined) headers["Content-Type"] = contentType;
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const signal = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
  const response = await fetch(path, { method, headers, credentials: "same-origin", body, signal });
  let data = null;
  try { data = await response.json(); } catch (_) { /* empty body */ }
  // The appliance's clock (to the second), for countdowns to its deadlines.
  return { status: response.status, data, date: response.headers.get("Date") };
}

const api = (method, path, body) =>
  request(method, path, body === undefined ? undefined : JSON.stringify(body), "application/json");

function errorText(data) {
  if (!data) return "Something went wrong.";
  if (data.fields && data.fields.length) return data.fields.map((f) => f.message).join(" ");
  return data.error || "Something went wrong.";
}

function el(tag, attrs, ...children) {
  const svg = ["svg", "polyline", "line", "text", "g", "rect", "circle", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.setAttribute("class", value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by the CSP
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---------------------------------------------------------------- tabs

function selectTab(name) {
  const tabButton = document.querySelector(`#tabs button[data-tab="${name}"]`);
  if (tabButton && !mayUse(tabButton.dataset.needs)) return; // the role may not open it
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.tab === name);
  for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== name;
  if (name === "config" && !edited) loadConfig(); // keep edits across tab switches
  if (name === "events") loadEvents();
  if (name === "system") { loadSystem(); loadLicence(); reloadNetwork(); loadCaBundles(); resetRestore(); loadSyslog(); loadSnmp(); }
  if (name === "users") { loadUsers(); loadDirectory(); }
  if (name === "audit") loadAudit();
  haTab(name);
  statsTab(name);
}

for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => selectTab(button.dataset.tab));
}

// ---------------------------------------------------------------- status

// Connections per member: the appliance's last ten minutes on entry, then
// one sample per status event.
const HISTORY_MS = 10 * 60 * 1000;
const history = new Map(); // "pool/member" -> [[time, connections]]
const drainPeak = new Map(); // "pool/member" -> most connections seen while draining

function record(status) {
  const now = Date.now();
  for (const pool of status.pools) {
    for (const m of pool.members) {
      const key = `${pool.name}/${m.name}`;
      const samples = history.get(key) || [];
      samples.push([now, m.active_connections]);
      while (samples.length && samples[0][0] < now - HISTORY_MS) samples.shift();
      history.set(key, samples);
      if (m.drain) drainPeak.set(key, Math.max(drainPeak.get(key) || 0, m.drain.active_connections));
      else drainPeak.delete(key);
    }
  }
}

async function loadHistory() {
  const { status, data } = await api("GET", "/api/v1/status/history");
  if (status !== 200) return;
  history.clear();
  for (const sample of data.samples) {
    const at = Date.parse(sample.at);
    for (const [key, connections] of Object.entries(sample.members)) {
      if (!history.has(key)) history.set(key, []);
      history.get(key).push([at, connections]);
    }
  }
}

// A line chart of [[time, value]] samples over the `span` ms up to `end`,
// scaled to their peak. Bare, it is the Status tab's sparkline of one
// member's connections. The Statistics tab's charts pass `options`: their
// `series` ([{name, samples, class, bars, dot}]: a null value breaks the
// line, `bars` draws a bar per non-zero sample instead, `dot` marks the
// newest point, so that even one sample shows), size and `pad`, a
// `ceiling` that rounds the peak up to the top of the scale, the `label`
// that says what the chart shows, `attrs` for the <svg>, and
// `decorate({x, y, top, from, end, width, height, pad})`, which draws the
// axes and marks in place of the "max" label.
function chart(samples, options = {}) {
  const { width = 160, height = 32, end = Date.now(), span = HISTORY_MS, series = [{ samples }],
    pad = { left: 0, right: 0, top: 4, bottom: 2 }, ceiling = (peak) => peak, label, attrs, decorate } = options;
  const from = end - span;
  const shown = series.map((s) => s.samples.filter(([t]) => t >= from));
  const peak = ceiling(Math.max(1, ...shown.flat().map(([, v]) => v || 0)));
  const [w, h] = [width - pad.left - pad.right, height - pad.top - pad.bottom];
  const x = (t) => pad.left + w - ((end - t) / span) * w;
  const y = (v) => pad.top + h - (v / peak) * h;
  const point = ([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`;
  const drawn = series.flatMap((s, n) => {
    if (s.bars) {
      return el("g", { class: `bars ${s.class || ""}`, "data-series": s.name },
        shown[n].filter(([, v]) => v > 0).map(([t, v]) => el("rect",
          { x: (x(t) - 1.5).toFixed(1), y: y(v).toFixed(1), width: 3, height: (y(0) - y(v)).toFixed(1) })));
    }
    const runs = [[]];
    for (const sample of shown[n]) {
      if (sample[1] !== null) runs[runs.length - 1].push(sample);
      else if (runs[runs.length - 1].length) runs.push([]);
    }
    const newest = shown[n][shown[n].length - 1];
    return [...runs.map((run) => el("polyline", { points: run.map(point).join(" "),
      class: s.class ? `series ${s.class}` : "series", "data-series": s.name })),
    s.dot && newest && newest[1] !== null
      ? el("circle", { cx: x(newest[0]).toFixed(1), cy: y(newest[1]).toFixed(1), r: 2, class: `end ${s.class || ""}` }) : null];
  });
  const last = samples.length ? samples[samples.length - 1][1] : 0;
  return el("svg", { ...attrs, class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": label || `connections over the last ten minutes, now ${last}, peak ${peak}` },
  el("line", { x1: pad.left, y1: y(0) + 1, x2: width - pad.right, y2: y(0) + 1, class: "axis" }),
  drawn,
  decorate ? decorate({ x, y, top: peak, from, end, width, height, pad }) : el("text", { x: 2, y: 10, class: "peak" }, `max ${peak}`));
}

function healthCell(health) {
  const cell = el("td");
  for (const [monitor, status] of Object.entries(health || {})) {
    const line = el("div", { "data-monitor": monitor, "data-state": status.state },
      el("span", { class: `dot ${status.state}`, title: status.state }), monitor);
    if (status.reason) line.append(" ", el("span", { class: "reason" }, status.reason));
    cell.append(line);
  }
  return cell;
}

function drainCell(key, member) {
  if (!member.drain) return el("td");
  const done = member.drain.state === "drained";
  const left = member.drain.active_connections;
  const peak = drainPeak.get(key) || left;
  const percent = done ? 100 : peak > 0 ? Math.round(100 * (peak - left) / peak) : 0;
  const label = done ? "ready to take offline"
    : `draining, ${left} connections left${member.drain.overdue ? " (overdue)" : ""}`;
  return el("td", { class: "drain", "data-drain": member.drain.state },
    el("div", { class: `progress${done ? " done" : ""}` }, el("div", { style: { width: `${percent}%` } })),
    label);
}

async function act(pool, member, action) {
  if (action !== "enable" && !confirm(`${action} ${member}? ${action === "drain"
      ? "It stops taking new clients; existing ones continue until they end."
      : "It leaves every answer and its connections are reset after a short grace."}`)) return;
  const { status, data } = await api("POST", `/api/v1/pools/${encodeURIComponent(pool)}/members/${encodeURIComponent(member)}/${action}`, {});
  if (status !== 200) alert(errorText(data));
}

function suggest(id, names) {
  const list = $(id);
  if (list.dataset.names === names.join("\n")) return;
  list.dataset.names = names.join("\n");
  list.replaceChildren(...names.map((name) => el("option", { value: name })));
}

// A member's addresses; with several, each says its own health for the
// pool's monitor (a dual-stack member is up while either is).
function addressCell(m, monitor) {
  const addresses = m.addresses || [{ address: m.address, health: {} }];
  if (addresses.length === 1) return el("td", {}, addresses[0].address);
  return el("td", {}, ...addresses.flatMap((a, n) => {
    const state = (a.health[monitor] || {}).state || "unknown";
    return [n ? el("br") : null, el("span", { "data-address": a.address, class: `health-${state}`, title: `${monitor}: ${state}` },
      a.address, state === "up" ? "" : ` (${state})`)];
  }));
}

function renderStatus(status) {
  record(status);
  suggest("pool-names", status.pools.map((p) => p.name));
  suggest("member-names", [...new Set(status.pools.flatMap((p) => p.members.map((m) => m.name)))]);
  const pools = $("pools");
  pools.replaceChildren();
  for (const pool of status.pools) {
    const rows = pool.members.map((m) => {
      const key = `${pool.name}/${m.name}`;
      return el("tr", { "data-member": m.name, "data-admin-state": m.admin_state },
        el("td", {}, m.name), addressCell(m, pool.monitor),
        el("td", { class: `state-${m.admin_state}` }, m.admin_state),
        healthCell(m.health), drainCell(key, m),
        el("td", { class: "connections" }, el("span", { class: "count" }, m.active_connections), chart(history.get(key) || [])),
        el("td", {},
          el("button", { onclick: () => act(pool.name, m.name, "drain"), "data-action": "drain", "data-needs": "operator" }, "Drain"), " ",
          el("button", { onclick: () => act(pool.name, m.name, "enable"), "data-action": "enable", "data-needs": "operator" }, "Enable"), " ",
          el("button", { class: "danger", onclick: () => act(pool.name, m.name, "disable"), "data-action": "disable", "data-needs": "operator" }, "Disable")));
    });
    pools.append(
      el("h3", {}, `${pool.name} — ${pool.fqdn}`, pool.failed_open ? " (no member eligible: answering with all enabled)" : ""),
      el("table", { "data-pool": pool.name },
        el("thead", {}, el("tr", {}, ...["Member", "Address", "Admin state", "Health", "Drain", "Connections", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows)));
  }
  const services = $("services");
  services.replaceChildren();
  for (const vs of status.virtual_services) {
    services.append(el("h3", {}, `${vs.name} — ${vs.address}:${vs.ports.join(", ")} → ${vs.pool}`),
      el("table", {}, el("thead", {}, el("tr", {}, ...["Member", "Health", "Active", "Total"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...vs.members.map((m) => el("tr", {},
          el("td", {}, m.name), el("td", {}, el("span", { class: `dot ${m.health}` }), m.health),
          el("td", {}, m.active_connections), el("td", {}, m.total_connections))))));
  }
  haReadOnly();
}

function startStream() {
  if (stream) stream.close();
  stream = new EventSource("/api/v1/status/stream");
  stream.addEventListener("status", (event) => {
    renderStatus(JSON.parse(event.data));
    if (!document.querySelector("[data-panel=events]").hidden) loadEvents();
  });
  // Each committed change, from whoever made it, as it is committed.
  stream.addEventListener("change", (event) => {
    const change = JSON.parse(event.data);
    const line = $("last-change");
    line.textContent = `Last change (version ${change.version}, ${change.source}): ${change.summary.join("; ")}`;
    line.hidden = false;
  });
}

// ---------------------------------------------------------------- statistics

// The appliance's last hour as charts, one sample per 10 s interval: per
// virtual service, per member (grouped by pool), DNS and SIP. Opening the
// tab loads the hour; while it is open the page asks every 10 s for the
// samples after the last it has (`after`), keeps an hour of them and draws
// again; leaving the tab stops that. Every chart marks the committed
// changes in its range. Times on the axis are the browser's local time, the
// range ends at the newest sample (the appliance's clock).
const STATS_POLL_MS = 10_000;
const STATS_KEEP_MS = 60 * 60 * 1000;
// Polls in a row that bring nothing before the page loads the hour again:
// a restarted appliance numbers its samples from 1.
const STATS_STALE_POLLS = 3;
let statsSamples = []; // oldest first, each with `time` (ms)
let statsChanges = [];
let statsMinutes = 60;
let statsTimer = null;
let statsRun = 0; // bumped on every start and stop: a late answer to an earlier run is dropped
let statsBusy = false;
let statsEmptyPolls = 0;

function statsTab(name) {
  if (name === "statistics") startStats();
  else stopStats();
}

function startStats() {
  stopStats();
  const run = statsRun;
  loadStats(run, true);
  statsTimer = setInterval(() => loadStats(run, statsEmptyPolls >= STATS_STALE_POLLS), STATS_POLL_MS);
}

function stopStats() {
  statsRun += 1;
  statsBusy = false;
  if (statsTimer) { clearInterval(statsTimer); statsTimer = null; }
}

async function loadStats(run, whole) {
  if (statsBusy) return;
  statsBusy = true;
  const last = statsSamples.length ? statsSamples[statsSamples.length - 1].seq : 0;
  let answer;
  try {
    answer = await api("GET", whole || !last ? "/api/v1/statistics?minutes=60" : `/api/v1/statistics?after=${last}`);
  } catch (_) {
    answer = { status: 0, data: { error: "The appliance did not answer; trying again in 10 s." } };
  }
  if (run !== statsRun) return;
  statsBusy = false;
  const { status, data } = answer;
  if (status === 401) { stopStats(); return; }
  $("stats-error").textContent = status === 200 ? "" : errorText(data);
  if (status !== 200) return;
  const fresh = data.samples.map((s) => ({ ...s, time: Date.parse(s.at) }));
  statsEmptyPolls = whole || fresh.length ? 0 : statsEmptyPolls + 1;
  statsSamples = whole ? fresh : statsSamples.concat(fresh.filter((s) => s.seq > last));
  const newest = statsSamples.length ? statsSamples[statsSamples.length - 1].time : 0;
  while (statsSamples.length && statsSamples[0].time <= newest - STATS_KEEP_MS) statsSamples.shift();
  statsChanges = data.changes.map((c) => ({ ...c, time: Date.parse(c.at) }));
  renderStats();
}

for (const button of document.querySelectorAll("#stats-range button")) {
  button.addEventListener("click", () => {
    statsMinutes = Number(button.dataset.minutes);
    for (const other of document.querySelectorAll("#stats-range button")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    renderStats();
  });
}

// A rate as people read it: whole numbers from 100, one decimal from 10,
// else up to two.
function statNumber(value) {
  if (Math.abs(value) >= 100) return String(Math.round(value));
  if (Math.abs(value) >= 10) return value.toFixed(1).replace(/\.0$/, "");
  return String(Number(value.toFixed(2)));
}

function counted(value, noun) {
  const n = Math.round(value);
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

const BYTE_UNITS = [[1 << 30, "GB/s"], [1 << 20, "MB/s"], [1 << 10, "KB/s"]];

function bytesPerS(value) {
  for (const [size, unit] of BYTE_UNITS) if (value >= size) return `${(value / size).toFixed(1)} ${unit}`;
  return `${statNumber(value)} B/s`;
}

// The smallest 1, 2 or 5 times a power of ten at or above `value`, in
// units of `base` (1024 for bytes, so the top reads "2.0 KB/s").
function niceCeiling(value, base = 1) {
  const unit = base === 1 ? 1 : BYTE_UNITS.map(([size]) => size).find((size) => value >= size) || 1;
  const scaled = value / unit;
  const power = 10 ** Math.floor(Math.log10(scaled));
  const step = [1, 2, 5, 10].find((m) => m * power >= scaled * (1 - 1e-9));
  return step * power * unit;
}

// What each kind of chart counts, how a value reads, and how its scale rounds.
const STAT_UNITS = {
  connections_per_s: { text: "connections per second", format: (v) => `${statNumber(v)} conn/s` },
  bytes_per_s: { text: "bytes per second", format: bytesPerS, base: 1024 },
  active: { text: "open connections", format: (v) => counted(v, "connection") },
  transitions: { text: "health transitions per 10 s interval", format: (v) => counted(v, "transition") },
  queries_per_s: { text: "queries and answers per second", format: (v) => `${statNumber(v)} queries/s` },
  requests_per_s: { text: "requests per second", format: (v) => `${statNumber(v)} requests/s` },
};

function hoursMinutes(time) {
  const at = new Date(time);
  return `${String(at.getHours()).padStart(2, "0")}:${String(at.getMinutes()).padStart(2, "0")}`;
}

function changeText(change) {
  return `${localTime(change.at)}: version ${change.version} (${change.source}): ${change.summary.join("; ")}`;
}

// A statistics chart's axes: the top of the scale with its unit, a local
// time every 5 or 15 minutes, and a dashed mark per committed change with
// what it changed as its tooltip.
function statsAxes(format) {
  return ({ x, y, top, from, end, width, height, pad }) => {
    const step = end - from > 30 * 60_000 ? 15 * 60_000 : 5 * 60_000;
    const ticks = [];
    for (let t = Math.ceil(from / step) * step; t <= end; t += step) ticks.push(t);
    const bottom = y(0);
    const anchor = (at) => (at < pad.left + 16 ? "start" : at > width - pad.right - 16 ? "end" : "middle");
    return [
      el("line", { x1: pad.left, y1: y(top), x2: width - pad.right, y2: y(top), class: "grid" }),
      el("text", { x: pad.left, y: pad.top - 4, class: "y-max" }, format(top)),
      ...ticks.map((t) => el("g", { class: "tick" },
        el("line", { x1: x(t).toFixed(1), y1: pad.top, x2: x(t).toFixed(1), y2: bottom, class: "grid" }),
        el("text", { x: x(t).toFixed(1), y: height - 3, "text-anchor": anchor(x(t)) }, hoursMinutes(t)))),
      ...statsChanges.filter((c) => c.time >= from && c.time <= end).map((c) => el("g", { class: "change", "data-version": c.version },
        el("title", {}, changeText(c)),
        el("line", { x1: x(c.time).toFixed(1), y1: pad.top, x2: x(c.time).toFixed(1), y2: bottom, class: "mark" }),
        el("line", { x1: x(c.time).toFixed(1), y1: pad.top, x2: x(c.time).toFixed(1), y2: bottom, class: "hit" }))),
    ];
  };
}

// One chart with its caption and legend. `lines`: [{name, label, class,
// bars, pick(sample)}]: `name` is the series' id (`data-series`), `label`
// what the legend calls it if not that, and `pick` gives undefined where
// the sample lacks the object (it did not exist then). The legend says each series' value in
// the newest sample (a bar series: its total over the range) and its peak.
function statsFigure(kind, caption, subject, lines) {
  const unit = STAT_UNITS[kind];
  const span = statsMinutes * 60_000;
  const end = statsSamples[statsSamples.length - 1].time;
  const inRange = statsSamples.filter((s) => s.time >= end - span);
  const range = statsMinutes === 60 ? "the last hour" : `the last ${statsMinutes} minutes`;
  const series = lines.map((line) => {
    const samples = inRange.map((s) => [s.time, line.pick(s) ?? null]);
    const values = samples.map(([, v]) => v).filter((v) => v !== null);
    const newest = samples.length ? samples[samples.length - 1][1] : null;
    return { ...line, samples, newest, dot: true, peak: Math.max(0, ...values), total: values.reduce((a, b) => a + b, 0) };
  });
  const now = (s) => (s.bars ? `${unit.format(s.total)} in ${range}` : s.newest === null ? "none now" : `${unit.format(s.newest)} now`);
  const name = (s) => s.label || s.name;
  const label = `${subject} ${unit.text}, ${range}: ${series.map((s) => `${name(s)} ${now(s)}, peak ${unit.format(s.peak)}`).join("; ")}`;
  const svg = chart([], {
    width: 480, height: 150, end, span, series, label, pad: { left: 4, right: 4, top: 18, bottom: 16 },
    ceiling: (peak) => niceCeiling(peak, unit.base), decorate: statsAxes(unit.format),
    attrs: { "data-chart": kind, "data-series": series.map((s) => s.name).join(" "), "data-range": statsMinutes },
  });
  const legend = el("ul", { class: "legend" }, series.map((s) => el("li", {
    "data-series": s.name, "data-value": s.bars ? s.total : s.newest ?? "", "data-peak": s.peak,
  }, el("span", { class: `swatch ${s.class}` }), `${name(s)} `, el("strong", {}, now(s)),
  el("span", { class: "hint" }, ` · peak ${unit.format(s.peak)}`))));
  return el("figure", { class: "stat", "data-chart": kind }, el("figcaption", {}, caption), svg, legend);
}

// The keys of `field` (services or members) in any sample of the range,
// in order.
function statsKeys(field) {
  const span = statsMinutes * 60_000;
  const end = statsSamples[statsSamples.length - 1].time;
  const keys = new Set();
  for (const s of statsSamples) if (s.time >= end - span) for (const key of Object.keys(s[field])) keys.add(key);
  return [...keys].sort();
}

function renderStats() {
  const empty = !statsSamples.length;
  $("stats-empty").hidden = !empty;
  for (const section of document.querySelectorAll("[data-stats]")) section.hidden = empty;
  if (empty) return;
  const field = (group, key, name) => (s) => s[group][key] && s[group][key][name];
  // A service's and a member's traffic: new connections, bytes each way.
  const trafficFigures = (group, key) => [
    statsFigure("connections_per_s", "New connections", key,
      [{ name: "connections", class: "blue", pick: field(group, key, "connections_per_s") }]),
    statsFigure("bytes_per_s", "Bytes (in: from clients, out: to clients)", key, [
      { name: "in", class: "blue", pick: field(group, key, "bytes_in_per_s") },
      { name: "out", class: "green", pick: field(group, key, "bytes_out_per_s") }]),
  ];

  $("stats-services").replaceChildren(...statsKeys("services").map((name) => el("div", { class: "stats-group", "data-service": name },
    el("h3", {}, name),
    el("div", { class: "stats-charts" },
      ...trafficFigures("services", name),
      statsFigure("active", "Open connections", name,
        [{ name: "open", class: "purple", pick: field("services", name, "active") }])))));

  const pools = new Map();
  for (const key of statsKeys("members")) {
    const cut = key.indexOf("/");
    const [pool, member] = cut < 0 ? ["", key] : [key.slice(0, cut), key.slice(cut + 1)];
    if (!pools.has(pool)) pools.set(pool, []);
    pools.get(pool).push([key, member]);
  }
  $("stats-members").replaceChildren(...[...pools].map(([pool, members]) => el("div", { class: "stats-pool", "data-pool": pool },
    el("h3", {}, pool),
    members.map(([key, member]) => el("div", { class: "stats-group", "data-member": member },
      el("h4", {}, member),
      el("div", { class: "stats-charts" },
        ...trafficFigures("members", key),
        statsFigure("transitions", "Health transitions", key, [
          { name: "down", class: "red", bars: true, pick: field("members", key, "went_down") },
          { name: "up", class: "green", bars: true, pick: field("members", key, "went_up") }])))))));

  const answer = (kind) => (s) => s.dns.answers_per_s[kind];
  $("stats-dns").replaceChildren(statsFigure("queries_per_s", "Queries, and answers by kind", "DNS", [
    { name: "queries", class: "blue", pick: (s) => s.dns.queries_per_s },
    { name: "data", class: "green", pick: answer("data") },
    { name: "nodata", class: "grey", pick: answer("nodata") },
    { name: "nxdomain", class: "orange", pick: answer("nxdomain") },
    { name: "refused", class: "purple", pick: answer("refused") },
    { name: "servfail", class: "red", pick: answer("servfail") },
    { name: "other", class: "teal", pick: answer("other") },
    { name: "dropped", class: "yellow", pick: (s) => s.dns.dropped_per_s }]));
  $("stats-sip").replaceChildren(statsFigure("requests_per_s", "Requests and redirects to the home server", "SIP", [
    { name: "requests", class: "blue", pick: (s) => s.sip.requests_per_s },
    { name: "redirects", class: "green", pick: (s) => s.sip.redirects_per_s },
    { name: "bad_requests", label: "bad requests", class: "red", pick: (s) => s.sip.bad_requests_per_s }]));
}

// ---------------------------------------------------------------- events

// The event log, newest first, a page at a time, as the audit log pages:
// `eventPages` holds the `before` of each page shown so far, so "Newer"
// goes back. A call without a direction (the live status stream, the tab)
// reloads the page shown; a filter change starts again at the newest. Only
// the answer to the latest request is shown: the stream's reloads must not
// land over a page asked for since.
const EVENTS_PAGE = 50;
let eventPages = [null];
let eventsRequest = 0;

function eventsQuery(before) {
  const query = new URLSearchParams();
  for (const [key, value] of new FormData($("events-filter"))) {
    if (!value.trim()) continue;
    // datetime-local is the browser's local time: sent as UTC.
    query.set(key, key === "since" || key === "until" ? new Date(value).toISOString() : value.trim());
  }
  const exportQuery = new URLSearchParams(query);
  exportQuery.set("format", "csv");
  $("events-csv").href = `/api/v1/events?${exportQuery}`;
  exportQuery.set("format", "json");
  exportQuery.set("limit", "1000");
  $("events-json").href = `/api/v1/events?${exportQuery}`;
  query.set("limit", String(EVENTS_PAGE));
  if (before) query.set("before", String(before));
  return query;
}

async function loadEvents(direction) {
  if (direction === "older") eventPages.push(Number($("events-older").dataset.before));
  else if (direction === "newer") eventPages.pop();
  else if (direction === "filter") eventPages = [null];
  const before = eventPages[eventPages.length - 1];
  const request = ++eventsRequest;
  const { status, data } = await api("GET", `/api/v1/events?${eventsQuery(before)}`);
  if (request !== eventsRequest || status !== 200) return;
  $("events-table").tBodies[0].replaceChildren(...data.events.map((e) => el("tr", { "data-kind": e.kind, "data-id": e.id },
    el("td", {}, el("time", { datetime: e.at }, localTime(e.at))),
    el("td", {}, e.kind), el("td", {}, e.pool || ""), el("td", {}, e.member || ""),
    el("td", { class: "wrap" }, e.message))));
  $("events-older").hidden = !data.next_before;
  $("events-older").dataset.before = data.next_before || "";
  $("events-newer").hidden = eventPages.length <= 1;
}

$("events-filter").addEventListener("submit", (event) => { event.preventDefault(); loadEvents("filter"); });
$("events-filter").addEventListener("change", () => loadEvents("filter"));
$("events-older").addEventListener("click", () => loadEvents("older"));
$("events-newer").addEventListener("click", () => loadEvents("newer"));

// ---------------------------------------------------------------- registrar

$("registrar-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const uri = new FormData(event.target).get("uri");
  const { status, data } = await api("GET", `/api/v1/registrar?uri=${encodeURIComponent(uri)}`);
  const result = $("registrar-result");
  if (status !== 200) { result.replaceChildren(el("p", { class: "error" }, errorText(data))); return; }
  result.replaceChildren(
    el("p", {}, el("span", { "data-home": data.home }, `Home server: ${data.home}. `),
      data.backup_mode ? el("strong", { "data-backup-mode": "" }, "Backup mode: the home server is out of service.") : "In normal mode."),
    el("p", {}, "Registers with, in order: "),
    el("ol", { id: "registrar-sequence" }, ...data.physical.map((name) => el("li", {}, name))),
    el("p", { class: "hint" }, `Full failover order: ${data.logical.join(" → ")}`));
});

// ---------------------------------------------------------------- config editor

// Field kinds: text, text? (optional), int, int?, ints? (comma list), strs?
// (comma list), bool, or an array of choices ("" = leave out).
const MONITOR_FIELDS = [
  ["name", "Name", "text"], ["type", "Type", ["tcp", "tls", "http", "https", "sip-options"]],
  ["port", "Port", "int?"], ["interval_ms", "Interval (ms)", "int"], ["timeout_ms", "Timeout (ms)", "int"],
  ["rise", "Rise", "int"], ["fall", "Fall", "int"], ["start", "Before the first probe", ["up", "down"]],
  ["path", "HTTP path", "text?"], ["host", "HTTP Host", "text?"], ["expect_status", "Expected status codes", "ints?"],
  ["body_contains", "Body contains", "text?"], ["transport", "SIP transport", ["", "udp", "tcp", "tls"]],
  ["sni", "TLS server name (default: each member's FQDN)", "text?"], ["ca_bundle", "CA bundle", "text?"],
  ["tls_verify", "Verify TLS certificate", ["", "true", "false"]],
];
const POOL_FIELDS = [
  ["name", "Name", "text"], ["fqdn", "Pool FQDN", "text"], ["aliases", "Aliases", "strs?"],
  ["monitor", "Monitor", "monitor"], ["registrar_port", "Registrar port", "int"],
  ["registrar_transport", "Registrar transport", ["tls", "tcp", "udp"]],
  ["drain_timeout_s", "Drain timeout (s)", "int?"], ["drop_at_deadline", "Reset connections at the drain deadline", "bool"],
];
const MEMBER_FIELDS = [
  ["name", "Name", "text"], ["fqdn", "FQDN", "text?"], ["address", "Address", "text?"],
  ["addresses", "Or, dual-stack: an IPv4 and an IPv6 address", "strs?"],
  ["weight", "Weight", "int"], ["state", "Admin state", ["enabled", "draining", "disabled"]],
];
const SERVICE_FIELDS = [
  ["name", "Name", "text"], ["address", "Address", "text"], ["port", "Port", "int"],
  ["member_port", "Member port (default: Port)", "int?"],
  ["pool", "Pool", "pool"], ["monitor", "Monitor (default: the pool's)", "monitor?"],
  ["scheduler", "Scheduler", ["round-robin", "weighted-round-robin", "least-connections", "source-hash"]],
  ["persistence", "Persistence", ["none", "source-ip"]], ["persistence_timeout_s", "Persistence timeout (s)", "int"],
  ["idle_timeout_s", "Idle timeout (s)", "int"], ["connect_timeout_ms", "Connect timeout (ms)", "int"],
  ["drop_on_down", "Close connections when the member goes down", "bool"],
  ["send_proxy", "Send a PROXY header to members", ["", "none", "v2"]],
];
// One of a service's extra ports: `80` (the same port on the member) or
// `{ port, member_port }`. Kept in the form it came in, so an edit that does
// not map a port leaves the entry as it was written.
const EXTRA_PORT_FIELDS = [["port", "Port", "int"], ["member_port", "Member port (default: the same)", "int?"]];

function extraPorts(service, path) {
  const items = service.extra_ports || (service.extra_ports = []);
  const rows = items.map((entry, i) => {
    const itemPath = `${path}extra_ports[${i}]`;
    const table = typeof entry === "object" && entry !== null;
    // Edited as a table; written back as a bare number unless it maps.
    const view = table ? { ...entry } : { port: entry };
    const touched = () => {
      items[i] = view.member_port !== undefined || table ? { ...view } : view.port;
      edited = true;
    };
    return el("div", { class: "fields extra-port", "data-path": itemPath },
      ...EXTRA_PORT_FIELDS.map(([key, label, kind]) =>
        el("label", {}, label, input(view, key, kind, `${itemPath}.${key}`, touched))),
      el("button", { type: "button", class: "danger", "data-remove": itemPath,
        onclick: () => { items.splice(i, 1); edited = true; renderEditor(); } }, "Remove port"));
  });
  return el("div", { class: "members", "data-list": `${path}extra_ports` }, el("h4", {}, "Extra ports"), ...rows,
    el("button", { type: "button", "data-add": `${path}extra_ports`,
      onclick: () => { items.push(80); edited = true; renderEditor(); } }, "Add port"));
}
const DNS_FIELDS = [["ttl", "Answer TTL (s)", "int"], ["fail_open", "Fail open (answer with all enabled members if none is eligible)", "bool"]];

const TEMPLATES = {
  monitor: () => ({ name: "", type: "tcp", interval_ms: 2000, timeout_ms: 1000, rise: 2, fall: 3, start: "up" }),
  pool: () => ({ name: "", fqdn: "", monitor: (model.monitor && model.monitor[0] && model.monitor[0].name) || "",
    registrar_port: 5061, registrar_transport: "tls", member: [] }),
  member: () => ({ name: "", address: "", weight: 1, state: "enabled" }),
  virtual_service: () => ({ name: "", address: "", port: 443, pool: (model.pool && model.pool[0] && model.pool[0].name) || "",
    scheduler: "round-robin", persistence: "none", persistence_timeout_s: 1200, idle_timeout_s: 1800, connect_timeout_ms: 3000 }),
};

let model = null; // the config being edited, in the API's JSON shape
let edited = false; // model differs from the config as loaded
let loadedVersion = null;
let pending = null; // a previewed config waiting for Apply

function display(value, kind) {
  if (value === undefined || value === null) return "";
  if (Array.isArray(value)) return value.join(", ");
  if (kind === "bool") return value;
  return String(value);
}

function parse(text, kind) {
  const value = text.trim();
  const number = (v) => (/^\d+$/.test(v) ? Number(v) : v); // anything else: the appliance names the field
  if (Array.isArray(kind)) return value === "" ? undefined : value === "true" ? true : value === "false" ? false : value;
  if (kind.endsWith("?") && value === "") return undefined;
  if (kind.startsWith("int")) return kind === "ints?" ? value.split(/[\s,]+/).filter(Boolean).map(number) : number(value);
  if (kind === "strs?") return value.split(/[\s,]+/).filter(Boolean);
  return value;
}

const markEdited = () => { edited = true; };

// `touched` is called after each edit (the config editor's by default).
function input(object, key, kind, path, touched = markEdited) {
  const set = (value) => {
    if (value === undefined) delete object[key]; else object[key] = value;
    touched();
  };
  if (kind === "bool") {
    return el("input", { type: "checkbox", checked: Boolean(object[key]), "data-path": path,
      onchange: (event) => set(event.target.checked) });
  }
  let choices = kind;
  if (kind === "monitor" || kind === "monitor?") choices = [...(kind.endsWith("?") ? [""] : []), ...(model.monitor || []).map((m) => m.name)];
  if (kind === "pool") choices = (model.pool || []).map((p) => p.name);
  if (Array.isArray(choices)) {
    const current = display(object[key]);
    const options = choices.includes(current) ? choices : [...choices, current];
    return el("select", { "data-path": path, onchange: (event) => set(parse(event.target.value, kind === "monitor" || kind === "pool" ? "text" : choices)) },
      ...options.map((c) => el("option", { value: c, selected: c === current }, c === "" ? "(default)" : c)));
  }
  return el("input", { value: display(object[key], kind), "data-path": path, spellcheck: "false",
    inputmode: kind.startsWith("int") ? "numeric" : null, oninput: (event) => set(parse(event.target.value, kind)) });
}

function fields(object, spec, path, touched = markEdited) {
  return el("div", { class: "fields" }, ...spec.map(([key, label, kind]) =>
    el("label", { class: kind === "bool" ? "check" : null }, label, input(object, key, kind, `${path}${key}`, touched))));
}

function list(parent, key, path, title, spec, render) {
  const items = parent[key] || (parent[key] = []);
  const singular = title.replace(/s$/, "").toLowerCase();
  return el("div", { class: "list", "data-list": `${path}${key}` },
    ...items.map((item, i) => {
      const itemPath = `${path}${key}[${i}]`;
      return el("fieldset", { "data-path": itemPath },
        el("legend", {}, `${title.replace(/s$/, "")} ${item.name || i + 1}`),
        fields(item, spec, `${itemPath}.`),
        render ? render(item, `${itemPath}.`) : null,
        el("button", { type: "button", class: "danger", "data-remove": itemPath,
          onclick: () => { items.splice(i, 1); edited = true; renderEditor(); } }, `Remove ${singular}`));
    }),
    el("button", { type: "button", "data-add": `${path}${key}`,
      onclick: () => { items.push(TEMPLATES[key](parent)); edited = true; renderEditor(); } }, `Add ${singular}`));
}

function renderEditor() {
  const form = $("config-form");
  if (!model) { form.replaceChildren(); return; }
  model.dns = model.dns || { ttl: 30, fail_open: true };
  form.replaceChildren(
    el("h3", {}, "Pools"),
    list(model, "pool", "", "Pools", POOL_FIELDS, (pool, path) =>
      el("div", { class: "members" }, el("h4", {}, "Members"), list(pool, "member", path, "Members", MEMBER_FIELDS))),
    el("h3", {}, "Virtual services"),
    list(model, "virtual_service", "", "Virtual services", SERVICE_FIELDS, extraPorts),
    el("h3", {}, "Monitors"),
    list(model, "monitor", "", "Monitors", MONITOR_FIELDS),
    el("h3", {}, "DNS"),
    el("fieldset", { "data-path": "dns" }, fields(model.dns, DNS_FIELDS, "dns.")));
}

async function loadConfig() {
  const [config, health] = await Promise.all([api("GET", "/api/v1/config"), api("GET", "/api/v1/health")]);
  if (config.status !== 200) return;
  model = config.data;
  edited = false;
  loadedVersion = health.data ? health.data.config_version : null;
  $("config-version").textContent = loadedVersion ? `(version ${loadedVersion})` : "";
  clearErrors();
  renderEditor();
}

function clearErrors() {
  for (const node of document.querySelectorAll("#config-form .field-error, #wizard-form .field-error")) node.remove();
  for (const node of document.querySelectorAll("#config-form .invalid, #wizard-form .invalid")) node.classList.remove("invalid");
  $("config-errors").replaceChildren();
  $("import-errors").replaceChildren();
  $("wizard-errors").replaceChildren();
}

// `pool[0].member[1].address` -> `pool[0].member[1]` -> `pool[0].member` ...
function parentPath(path) {
  const match = path.match(/^(.*?)(\.[^.[\]]+|\[\d+\])$/);
  return match ? match[1] : "";
}

// Show each problem next to the field its path names (or the nearest
// enclosing one) when it is in `form`; the rest in `list`.
function showFieldErrors(problems, list, form) {
  for (const problem of problems) {
    let target = null;
    for (let path = problem.field || ""; form && path && !target; path = parentPath(path)) {
      target = form.querySelector(`[data-path="${CSS.escape(path)}"]`);
    }
    if (target) {
      target.classList.add("invalid");
      const note = el("span", { class: "field-error", "data-error-for": problem.field }, problem.message);
      if (target.tagName === "FIELDSET") target.prepend(note); else target.after(note);
    } else {
      const where = problem.line ? `line ${problem.line}, column ${problem.column}: ` : "";
      list.append(el("li", { "data-error-for": problem.field || "" },
        `${problem.field ? `${problem.field}: ` : ""}${where}${problem.message}`));
    }
  }
}

// `form`: where field errors are marked (the editor's by default; the
// import has none, the wizard its own).
async function preview(body, contentType, errors, form = errors === $("config-errors") ? $("config-form") : null) {
  clearErrors();
  wizardPending = form === $("wizard-form");
  const { status, data } = await request("POST", "/api/v1/config/preview", body, contentType);
  if (status === 422 && data && data.fields) {
    showFieldErrors(data.fields, errors, form);
    const marked = form ? form.querySelectorAll(".field-error").length : 0;
    if (marked) errors.prepend(el("li", {}, `${marked} field${marked === 1 ? " needs" : "s need"} fixing: see the marked field${marked === 1 ? "" : "s"} above.`));
    return;
  }
  if (status !== 200) { errors.append(el("li", {}, errorText(data))); return; }
  pending = data;
  $("preview").hidden = false;
  $("preview-result").textContent = "";
  $("preview-headline").textContent = data.changed
    ? `Compared with the configuration in use (version ${data.based_on_version ?? "none"}):`
    : "This is the configuration in use already: nothing would change.";
  const summary = data.summary.map((line) => el("li", {}, line));
  if (data.changed && !summary.length) summary.push(el("li", {}, "Settings change as the lines below show."));
  if (data.confirm_by) summary.push(el("li", { class: "warn" }, "The admin address moves: confirm from the new address before the deadline, or the change is reverted."));
  $("preview-summary").replaceChildren(...summary);
  $("preview-diff").replaceChildren(...data.diff.map(([op, text]) =>
    el("span", { class: { "+": "added", "-": "removed", "…": "skipped" }[op] || "same" }, `${op} ${text}`)));
  $("preview-diff").hidden = data.diff.length === 0;
  $("preview-licence").textContent = data.licence_problem ? `The licence refuses this change: ${data.licence_problem}` : "";
  $("preview-apply").disabled = !data.changed || Boolean(data.licence_problem);
  $("preview").scrollIntoView({ block: "nearest" });
}

$("config-review").addEventListener("click", () => preview(JSON.stringify(model), "application/json", $("config-errors")));
$("config-reset").addEventListener("click", () => { $("preview").hidden = true; loadConfig(); });

$("import-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const file = form.get("file");
  const text = file && file.size ? await file.text() : form.get("toml");
  if (!text.trim()) { $("import-errors").replaceChildren(el("li", {}, "Choose a file or paste a configuration.")); return; }
  preview(text, "application/toml", $("import-errors"));
});

$("preview-apply").addEventListener("click", async () => {
  if (!pending) return;
  // Applied only onto the version it was reviewed against (409 otherwise).
  const { status, data } = await request("PUT", "/api/v1/config", JSON.stringify(pending.config), "application/json",
    pending.based_on_version ? { "If-Match": `"${pending.based_on_version}"` } : {});
  if (status !== 200) {
    $("preview-result").className = "error";
    $("preview-result").textContent = errorText(data);
    return;
  }
  const moved = data.confirm_by ? adminOrigin(pending.config) : null;
  pending = null;
  $("preview").hidden = true;
  $("import-form").reset();
  if (wizardPending) resetWizard();
  await loadConfig();
  const version = $("config-version");
  version.textContent = `(version ${data.version}: applied${data.confirm_by ? `; open the new admin address and confirm before ${data.confirm_by}, or it is reverted` : ""})`;
  // The new address confirms by itself once logged in there.
  if (moved) version.append(" ", el("a", { id: "admin-handover-link", href: `${moved}/#confirm=admin` }, `Continue at ${moved}`));
  version.dataset.applied = data.version;
});

$("preview-cancel").addEventListener("click", () => { pending = null; $("preview").hidden = true; });

// ---------------------------------------------------------------- pool templates

// The wizard builds one Skype for Business / Lync pool and merges it into
// the configuration in use; the result goes through the same preview (and
// Apply) as any edit. What each template makes, after Microsoft's DNS and
// load-balancing requirements:
// * Front End: the zone (with the appliance as its name server), the pool
//   (its members' addresses are its A/AAAA set) with the `sip` alias,
//   `_sipinternaltls._tcp` SRV, `lyncdiscoverinternal` and the internal
//   web FQDN to the internal web VIP (443 and 80, source-IP persistence,
//   1800 s idle), the external web FQDN to the external web VIP (443→4443,
//   80→8080, no persistence: the reverse proxy rewrites the sources), one
//   monitor: SIP OPTIONS over TLS on 5061, which also decides the web VIPs.
// * Director: the same without `lyncdiscoverinternal` (Directors do not
//   host the Mobility Service).
// * Edge internal: the pool and its monitor only (DNS load balancing; Edge
//   A/V over UDP is not balanced by poolgate).
const WIZARD_HELP = {
  frontend: "Front End pool: the pool's A/AAAA records (one per member, DNS load balanced) and the sip alias; "
    + "_sipinternaltls._tcp SRV to the pool; lyncdiscoverinternal and the internal web services FQDN to the internal web VIP "
    + "(443 and 80, source-IP persistence, 1800 s idle); the external web services FQDN to the external web VIP "
    + "(443 to the members' 4443 and 80 to their 8080, no persistence: the reverse proxy rewrites the sources). "
    + "Every member is probed with SIP OPTIONS over TLS on 5061, as Microsoft asks for the pool and its web VIPs.",
  director: "Director pool: as a Front End pool (Directors have internal and external web services of their own), "
    + "but without lyncdiscoverinternal: Directors do not host the Mobility Service, so it stays with the Front End pool. "
    + "The sip alias and _sipinternaltls._tcp lead clients to the Directors: when a Front End pool in the same zone has them already, "
    + "the wizard says so and you remove them there first.",
  edge: "Edge internal: the pool of the Edge Servers' internal interfaces, DNS load balanced (its A/AAAA records) and probed "
    + "with SIP OPTIONS over TLS on 5061. No web VIPs and no SIP records; Edge A/V traffic over UDP is not balanced by poolgate.",
};
const WIZARD_NOTE = " The monitor completes a TLS handshake and an OPTIONS request with each member, verifying its certificate "
  + "for the member's FQDN against the CA bundle you choose (upload your internal CA under System → CA bundles first); "
  + "with none chosen, certificates are not verified.";

let wizardRows = [];
let wizardPending = false; // the preview on screen came from the wizard

function renderWizard() {
  const form = $("wizard-form");
  const template = form.elements.template.value;
  $("wizard-help").textContent = WIZARD_HELP[template] + WIZARD_NOTE;
  for (const label of form.querySelectorAll("[data-web]")) label.hidden = template === "edge";
  $("wizard-members").tBodies[0].replaceChildren(...wizardRows.map((row, i) => el("tr", { "data-row": i },
    ...["name", "fqdn", "address"].map((key) => el("td", {}, el("input", { name: `member_${key}`, value: row[key],
      spellcheck: "false", "aria-label": `member ${i + 1} ${key}`, oninput: (event) => { row[key] = event.target.value.trim(); } }))),
    el("td", {}, el("button", { type: "button", class: "danger", "data-remove-member": i,
      onclick: () => { wizardRows.splice(i, 1); renderWizard(); } }, "Remove")))));
}

function resetWizard() {
  wizardPending = false;
  $("wizard-form").reset();
  wizardRows = [{ name: "", fqdn: "", address: "" }];
  $("wizard-open").open = false;
  renderWizard();
}

// The listen.dns address, when it is one address and not a wildcard.
function applianceDnsAddress(config) {
  const dns = (config.listen && config.listen.dns) || [];
  if (dns.length !== 1) return "";
  const host = dns[0].replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  return host === "0.0.0.0" || host === "::" ? "" : host;
}

const bare = (name) => name.trim().toLowerCase().replace(/\.$/, "");
// A member row's address input: one address, or a dual-stack member's IPv4
// and IPv6 addresses separated by a comma or space.
function memberAddresses(text) {
  const list = text.split(/[\s,]+/).filter(Boolean);
  return list.length > 1 ? { addresses: list } : { address: text.trim() };
}

// A name in `zone` as a record name: relative when inside, else absolute.
function recordName(fqdn, zone) {
  const name = bare(fqdn);
  return name.endsWith(`.${zone}`) ? name.slice(0, -zone.length - 1) : `${name}.`;
}

// Merge what `values` describe into `config`; returns the problems that stop
// it (an object that exists already), or [] with `config` extended and each
// wizard field's `data-path` set to the config path it became.
function buildFromTemplate(config, values, form) {
  const problems = [];
  const template = values.template;
  const fqdn = bare(values.pool_fqdn);
  const zoneName = bare(values.domain);
  const name = fqdn.split(".")[0];
  const web = template !== "edge";
  // A VIP's input stands for the service's address, its label for the
  // records that point at it.
  const mark = (field, path, onLabel) => {
    const node = form.elements[field];
    if (node) (onLabel ? node.closest("label") : node).dataset.path = path;
  };
  for (const key of ["zone", "monitor", "pool", "virtual_service"]) config[key] = config[key] || [];
  const taken = (key, object) => config[key].some((o) => o.name === object);
  if (!fqdn) problems.push("Give the pool FQDN.");
  if (!zoneName) problems.push("Give the SIP domain.");
  if (!wizardRows.length) problems.push("Add at least one member.");
  if (web) {
    for (const [field, what] of [["web_internal_fqdn", "internal web services FQDN"], ["web_internal_vip", "internal web VIP address"],
      ["web_external_fqdn", "external web services FQDN"], ["web_external_vip", "external web VIP address"]]) {
      if (!values[field].trim()) problems.push(`Give the ${what}.`);
    }
  }
  // Said together with what exists already, below.
  const monitorName = `${name}-sip`;
  const services = web ? [`${name}-web-internal`, `${name}-web-external`] : [];
  if (taken("pool", name)) problems.push(`A pool named ${name} exists already.`);
  for (const pool of config.pool) {
    if (bare(pool.fqdn) === fqdn) problems.push(`Pool ${pool.name} has the FQDN ${fqdn} already.`);
  }
  if (taken("monitor", monitorName)) problems.push(`A monitor named ${monitorName} exists already.`);
  for (const service of services) if (taken("virtual_service", service)) problems.push(`A virtual service named ${service} exists already.`);

  let zoneIndex = config.zone.findIndex((z) => bare(z.name) === zoneName);
  const zone = zoneIndex >= 0 ? config.zone[zoneIndex] : { name: zoneName };
  const records = [];
  const record = (field, rname, type, value) => records.push({ field, record: { name: rname, type, value } });
  if (web) {
    record(null, "_sipinternaltls._tcp", "SRV", `0 0 5061 ${fqdn}.`);
    if (template === "frontend") record("web_internal_vip", "lyncdiscoverinternal", "A", values.web_internal_vip.trim());
    record("web_internal_fqdn", recordName(values.web_internal_fqdn, zoneName), "A", values.web_internal_vip.trim());
    record("web_external_fqdn", recordName(values.web_external_fqdn, zoneName), "A", values.web_external_vip.trim());
  }
  for (const { record: r } of records) {
    const clash = (zone.record || []).find((o) => bare(o.name) === bare(r.name) && o.type === r.type);
    if (clash) problems.push(`Zone ${zoneName} has a ${r.type} record ${r.name} already (${clash.value}).`);
  }
  if (problems.length) return problems;

  if (zoneIndex < 0) {
    const address = values.dns_address.trim();
    // No address: the appliance's DNS listener answers as ns.<zone> (or,
    // for a wildcard listener, the appliance asks for one).
    if (address) zone.name_servers = [{ name: `ns1.${zoneName}`, addresses: [address] }];
    zoneIndex = config.zone.push(zone) - 1;
    mark("domain", `zone[${zoneIndex}].name`);
    mark("dns_address", `zone[${zoneIndex}].name_servers[0].addresses[0]`);
  }
  zone.record = zone.record || [];
  for (const { field, record: r } of records) {
    const at = zone.record.push(r) - 1;
    if (field) mark(field, `zone[${zoneIndex}].record[${at}]${field.endsWith("vip") ? ".value" : ".name"}`, field.endsWith("vip"));
  }
  config.monitor.push({ name: monitorName, type: "sip-options", transport: "tls", port: 5061,
    expect_status: [200], interval_ms: 2000, timeout_ms: 1000, rise: 2, fall: 3,
    // A member takes clients once it has answered, not before.
    start: "down", ...(values.ca_bundle ? { ca_bundle: values.ca_bundle } : { tls_verify: false }) });
  const poolIndex = config.pool.push({ name, fqdn, ...(web ? { aliases: [`sip.${zoneName}`] } : {}),
    monitor: monitorName, registrar_port: 5061, registrar_transport: "tls",
    member: wizardRows.map((row) => ({ name: row.name, ...(row.fqdn ? { fqdn: bare(row.fqdn) } : {}),
      ...memberAddresses(row.address), weight: 1, state: "enabled" })) }) - 1;
  mark("pool_fqdn", `pool[${poolIndex}].fqdn`);
  wizardRows.forEach((_, i) => {
    const row = $("wizard-members").tBodies[0].rows[i];
    for (const key of ["name", "fqdn", "address"]) row.querySelector(`[name=member_${key}]`).dataset.path = `pool[${poolIndex}].member[${i}].${key}`;
    if (/[\s,]/.test(wizardRows[i].address.trim())) row.querySelector("[name=member_address]").dataset.path = `pool[${poolIndex}].member[${i}].addresses`;
  });
  if (web) {
    const common = { pool: name, monitor: monitorName, scheduler: "least-connections", idle_timeout_s: 1800, connect_timeout_ms: 3000 };
    const internal = config.virtual_service.push({ name: services[0], address: values.web_internal_vip.trim(), port: 443,
      extra_ports: [80], ...common, persistence: "source-ip", persistence_timeout_s: 1200 }) - 1;
    const external = config.virtual_service.push({ name: services[1], address: values.web_external_vip.trim(), port: 443,
      member_port: 4443, extra_ports: [{ port: 80, member_port: 8080 }], ...common, persistence: "none" }) - 1;
    mark("web_internal_vip", `virtual_service[${internal}].address`);
    mark("web_external_vip", `virtual_service[${external}].address`);
  }
  return [];
}

$("wizard-form").elements.template.addEventListener("change", renderWizard);
$("wizard-add-member").addEventListener("click", () => { wizardRows.push({ name: "", fqdn: "", address: "" }); renderWizard(); });
$("wizard-open").addEventListener("toggle", async () => {
  if (!$("wizard-open").open) return;
  const { status, data } = await api("GET", "/api/v1/config");
  const field = $("wizard-form").elements.dns_address;
  if (status === 200 && !field.value) field.value = applianceDnsAddress(data);
  const bundles = await api("GET", "/api/v1/ca-bundles");
  const select = $("wizard-ca-bundle");
  const chosen = select.value;
  const names = bundles.status === 200 ? (bundles.data.ca_bundles || []).map((b) => b.name) : [];
  select.replaceChildren(el("option", { value: "" }, "none: do not verify certificates"),
    ...names.map((name) => el("option", { value: name }, name)));
  if (names.includes(chosen)) select.value = chosen;
});

$("wizard-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const form = $("wizard-form");
  for (const node of form.querySelectorAll("[data-path]")) delete node.dataset.path;
  // Merged into the configuration in use, not into unapplied edits.
  const { status, data } = await api("GET", "/api/v1/config");
  if (status !== 200) { $("wizard-errors").append(el("li", {}, errorText(data))); return; }
  const values = Object.fromEntries(new FormData(form));
  const problems = buildFromTemplate(data, values, form);
  if (problems.length) {
    $("wizard-errors").replaceChildren(...problems.map((text) => el("li", { "data-refusal": "" }, `${text} Nothing was added.`)));
    return;
  }
  await preview(JSON.stringify(data), "application/json", $("wizard-errors"), form);
});

resetWizard();

// ---------------------------------------------------------------- system

function facts(target, pairs) {
  target.replaceChildren(...pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .flatMap(([k, v, id]) => [el("dt", {}, k), el("dd", { "data-fact": id || null }, v)]));
}

function describeCertificate(target, cert) {
  if (!cert) { target.replaceChildren(); return; }
  facts(target, [
    ["Subject", cert.subject, "subject"], ["Issuer", cert.self_signed ? `${cert.issuer} (self-signed)` : cert.issuer, "issuer"],
    ["Names", [...cert.dns_names, ...cert.ip_addresses].join(", ")], ["Valid from", cert.not_before],
    ["Valid until", cert.not_after, "not_after"], ["Serial", cert.serial], ["SHA-256", cert.sha256_fingerprint, "fingerprint"],
    ["Chain", `${cert.chain_length} certificate${cert.chain_length === 1 ? "" : "s"}`],
  ]);
}

async function loadSystem() {
  const { status, data } = await api("GET", "/api/v1/system");
  if (status !== 200) return;
  const uptime = data.uptime_s >= 3600 ? `${Math.floor(data.uptime_s / 3600)} h ${Math.floor(data.uptime_s % 3600 / 60)} min`
    : `${Math.floor(data.uptime_s / 60)} min ${data.uptime_s % 60} s`;
  facts($("system-info"), [
    ["Version", data.version, "version"], ["Build", data.build, "build"], ["Appliance id", data.appliance_id],
    ["Running slot", data.slot ? `root-${data.slot}` : null, "slot"],
    ["Previous version", data.previous_version, "previous_version"],
    ["Last upgrade", lastUpgradeText(data.last_upgrade), "last_upgrade"],
    ["Pending upgrade", pendingText(data.pending_upgrade), "pending_upgrade"],
    ["Restart", rebootText(data.reboot_scheduled, data.reboot_mode), "reboot_scheduled"],
    ["Up for", uptime], ["Configuration version", data.config_version],
  ]);
  const outcome = document.querySelector("#system-info [data-fact=last_upgrade]");
  if (outcome) {
    outcome.dataset.outcome = data.last_upgrade.outcome;
    outcome.classList.toggle("warn", data.last_upgrade.outcome !== "succeeded");
  }
  const pendingNote = $("upgrade-pending");
  pendingNote.hidden = !data.pending_upgrade;
  pendingNote.textContent = data.pending_upgrade
    ? `${pendingText(data.pending_upgrade)}.${data.reboot_scheduled ? ` ${rebootText(data.reboot_scheduled, data.reboot_mode)}.` : ""}`
    : "";
  describeCertificate($("certificate-info"), data.certificate);
}

// ---------------------------------------------------------------- system → network

// The appliance's own network: what the host has now (interfaces, routes,
// resolvers, NTP), the confirmed settings as a form, and a change that is
// applied and waits for its confirmation with a countdown to its deadline.
const NET_FIELDS = [
  ["hostname", "Host name", "text?"], ["timezone", "Time zone (empty: UTC)", "text?"],
  ["dns_servers", "DNS resolvers", "strs?"], ["search_domains", "Search domains", "strs?"],
  ["ntp_servers", "NTP servers", "strs?"], ["gateway4", "IPv4 default gateway", "text?"],
  ["gateway6", "IPv6 default gateway", "text?"],
];
const NET_INTERFACE_FIELDS = [
  ["name", "Name", "text?"], ["mac", "MAC address", "text?"], ["addresses", "Static addresses (CIDR)", "strs?"],
  ["mtu", "MTU", "int?"], ["dhcp4", "DHCPv4", "bool"], ["slaac", "IPv6 SLAAC", "bool"],
];
const NET_VLAN_FIELDS = [
  ["id", "VLAN id", "int"], ["addresses", "Static addresses (CIDR)", "strs?"], ["mtu", "MTU", "int?"],
  ["dhcp4", "DHCPv4", "bool"], ["slaac", "IPv6 SLAAC", "bool"],
];
const NET_ROUTE_FIELDS = [["destination", "Destination (CIDR)", "text"], ["via", "Via", "text"]];
const NET_TEMPLATES = {
  interfaces: () => ({ name: "", dhcp4: false, addresses: [], slaac: true, vlans: [] }),
  vlans: () => ({ id: "", dhcp4: false, addresses: [], slaac: true }),
  routes: () => ({ destination: "", via: "" }),
};

let netView = null; // the last GET /api/v1/system/network
let netModel = null; // the settings being edited
let netEdited = false;
let netSkew = 0; // the appliance's clock minus this browser's, ms
let netWatch = null; // the pending change this page counts down: { change, origin, confirmed, unreachable }
let netTimer = null;
const netTouched = () => { netEdited = true; };

// `Date` is whole seconds: the appliance's clock is half a second past it
// on average.
function appliancesClock(date) {
  const at = Date.parse(date || "");
  if (!Number.isNaN(at)) netSkew = at + 500 - Date.now();
}

function netList(parent, key, path, title, spec, render) {
  const items = parent[key] || (parent[key] = []);
  const name = title === "VLAN" ? title : title.toLowerCase();
  return el("div", { class: "list", "data-list": `${path}${key}` },
    ...items.map((item, i) => {
      const itemPath = `${path}${key}[${i}]`;
      return el("fieldset", { "data-path": itemPath },
        el("legend", {}, `${title} ${item.name || item.id || item.destination || i + 1}`),
        fields(item, spec, `${itemPath}.`, netTouched),
        render ? render(item, `${itemPath}.`) : null,
        el("button", { type: "button", class: "danger", "data-remove": itemPath,
          onclick: () => { items.splice(i, 1); netEdited = true; renderNetworkForm(); } }, `Remove ${name}`));
    }),
    el("button", { type: "button", "data-add": `${path}${key}`,
      onclick: () => { items.push(NET_TEMPLATES[key]()); netEdited = true; renderNetworkForm(); } }, `Add ${name}`));
}

function renderNetworkForm() {
  const form = $("network-form");
  if (!netModel) { form.replaceChildren(); return; }
  form.replaceChildren(
    el("fieldset", {}, fields(netModel, NET_FIELDS, "", netTouched)),
    el("h4", {}, "Interfaces"),
    el("p", { class: "hint" }, "Match each by name, MAC or both; an interface not listed takes DHCPv4 and SLAAC."),
    netList(netModel, "interfaces", "", "Interface", NET_INTERFACE_FIELDS, (iface, path) =>
      el("div", { class: "members" }, netList(iface, "vlans", path, "VLAN", NET_VLAN_FIELDS))),
    el("h4", {}, "Static routes"),
    netList(netModel, "routes", "", "Route", NET_ROUTE_FIELDS));
}

function clearNetworkErrors() {
  for (const node of document.querySelectorAll("#network-form .field-error")) node.remove();
  for (const node of document.querySelectorAll("#network-form .invalid")) node.classList.remove("invalid");
  $("network-errors").replaceChildren();
}

function networkProblems(status, data) {
  if (status === 422 && data && data.fields) {
    showFieldErrors(data.fields, $("network-errors"), $("network-form"));
    const marked = document.querySelectorAll("#network-form .field-error").length;
    if (marked) $("network-errors").prepend(el("li", {}, `${marked} field${marked === 1 ? " needs" : "s need"} fixing: see the marked field${marked === 1 ? "" : "s"} above. Nothing was applied.`));
  } else {
    $("network-errors").append(el("li", {}, `${errorText(data)} Nothing was applied.`));
  }
}

function linkState(state) {
  return state === "up" ? "up" : state === "down" || state === "lowerlayerdown" ? "down" : "unknown";
}

// The VLANs the settings give an interface, and what its name says.
function vlansOf(settings, observed) {
  const mine = settings.interfaces.filter((i) => (i.name && i.name === observed.name)
    || (i.mac && observed.mac && i.mac.toLowerCase() === observed.mac.toLowerCase() && !observed.name.includes(".")));
  const ids = mine.flatMap((i) => i.vlans.map((v) => v.id));
  const parts = observed.name.match(/^(.+)\.(\d+)$/);
  return [ids.length ? `configured: ${ids.join(", ")}` : null, parts ? `VLAN ${parts[2]} on ${parts[1]}` : null]
    .filter(Boolean).join("; ");
}

function ntpText(ntp) {
  if (!ntp) return "chrony does not answer";
  if (!ntp.synchronised) return `not synchronised${ntp.source ? ` (source ${ntp.source})` : ""}`;
  const offset = Math.abs(ntp.offset_s) < 1 ? `${(ntp.offset_s * 1000).toFixed(3)} ms` : `${ntp.offset_s.toFixed(3)} s`;
  return `synchronised to ${ntp.source}, stratum ${ntp.stratum}, offset ${offset}`;
}

function renderNetwork(view) {
  const { settings, observed } = view;
  $("network-managed").textContent = view.managed ? ""
    : "(shown only: poolgate does not manage this system's network)";
  $("network-edit").hidden = !view.managed;
  const list = (items) => (items && items.length ? items.join(", ") : null);
  facts($("network-facts"), [
    ["Host name", observed.hostname, "hostname"],
    ["Configured host name", settings.hostname, "configured_hostname"],
    ["Time zone", settings.timezone || "UTC", "timezone"],
    ["Resolvers in use", list(observed.resolvers) || "none", "resolvers"],
    ["Configured resolvers", list(settings.dns_servers), "dns_servers"],
    ["Search domains", list(settings.search_domains), "search_domains"],
    ["NTP servers", list(settings.ntp_servers) || "the image's", "ntp_servers"],
    ["Time synchronisation", ntpText(observed.ntp), "ntp"],
    ["Default gateways", list([settings.gateway4, settings.gateway6].filter(Boolean)), "gateways"],
  ]);
  const ntp = document.querySelector("#network-facts [data-fact=ntp]");
  if (ntp) ntp.dataset.synchronised = Boolean(observed.ntp && observed.ntp.synchronised);
  document.querySelector("#network-interfaces tbody").replaceChildren(...observed.interfaces.map((i) =>
    el("tr", { "data-interface": i.name },
      el("td", {}, i.name),
      el("td", { "data-state": i.state }, el("span", { class: `dot ${linkState(i.state)}` }), i.state),
      el("td", { "data-mac": "" }, i.mac || ""), el("td", {}, i.mtu ?? ""),
      el("td", { "data-addresses": "" }, ...i.addresses.flatMap((a, n) => [n ? el("br") : null, a])),
      el("td", {}, vlansOf(settings, i)))));
  document.querySelector("#network-routes tbody").replaceChildren(...observed.routes.map((r) =>
    el("tr", {}, el("td", {}, r.destination), el("td", {}, r.via || "(on link)"), el("td", {}, r.interface))));
}

// Where the page can reach the appliance once `change` is applied, when
// it moves the address this page came in on: the interface (or VLAN)
// that has that address now, and its first static address of the same
// family in the new settings. `undefined` when the address stays, `null`
// when the page cannot tell (a host name, DHCP, an interface matched
// only by what the page cannot see). `at` is where the page is.
function movedOrigin(view, change, at = location) {
  const host = at.hostname.replace(/^\[|\]$/g, "");
  const v6 = host.includes(":");
  if (!v6 && !/^\d+\.\d+\.\d+\.\d+$/.test(host)) return null;
  const here = view.observed.interfaces.find((i) => i.addresses.some((a) => a.split("/")[0] === host));
  if (!here) return null;
  const links = change.settings.interfaces.flatMap((i) => [
    { match: (i.name && i.name === here.name) || (i.mac && here.mac && !here.name.includes(".")
        && i.mac.toLowerCase() === here.mac.toLowerCase()), link: i },
    ...i.vlans.map((v) => ({ match: Boolean(i.name) && `${i.name}.${v.id}` === here.name, link: v }))]);
  const found = links.find((l) => l.match);
  if (!found) return change.settings.interfaces.length ? null : undefined;
  const statics = found.link.addresses.map((a) => a.split("/")[0]);
  if (statics.includes(host)) return undefined;
  const next = statics.find((a) => a.includes(":") === v6);
  if (!next || found.link.dhcp4) return null;
  return `${at.protocol}//${v6 ? `[${next}]` : next}${at.port ? `:${at.port}` : ""}`;
}

function showHandover(watch) {
  const note = $("network-handover");
  const change = watch.change;
  const touchesAddresses = change.changes.some((line) => /^(interfaces|gateway|routes)/.test(line));
  if (watch.origin) {
    const href = `${watch.origin}/#confirm=network:${change.id}`;
    note.replaceChildren("The admin address moves to ", el("a", { id: "network-handover-link", href }, watch.origin),
      ". This page goes there when this address stops answering, and confirms from there once you have logged in"
      + " (the session does not follow to another address).");
  } else if (watch.origin === null && touchesAddresses) {
    note.replaceChildren("The admin address may change. If this page stops answering, open the appliance at its new address,"
      + " log in and confirm there before the deadline.");
  } else {
    note.replaceChildren();
  }
  note.hidden = !note.childNodes.length;
}

// JSON with every object's keys sorted: the API's answers do not all keep
// one order.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical(value[key])}`).join(",")}}`;
  }
  return JSON.stringify(value ?? null);
}

function networkResult(outcome, text) {
  const result = $("network-result");
  result.hidden = false;
  result.className = outcome === "confirmed" ? "notice" : "refusal";
  result.dataset.outcome = outcome;
  result.textContent = text;
}

function watchPending(pending) {
  const box = $("network-pending");
  if (pending) {
    if (!netWatch || netWatch.change.id !== pending.id) {
      netWatch = { change: pending, origin: netView ? movedOrigin(netView, pending) : null, unreachable: 0 };
      $("network-result").hidden = true;
    }
    box.hidden = false;
    box.dataset.change = pending.id;
    $("network-pending-text").textContent = `Change ${pending.id} is applied and waits for its confirmation (deadline ${pending.deadline.replace(/\.\d+/, "")}).`;
    $("network-pending-changes").replaceChildren(...pending.changes.map((line) => el("li", {}, line)));
    showHandover(netWatch);
    if (!netTimer) netTimer = setInterval(networkTick, 500);
    networkTick();
    return;
  }
  box.hidden = true;
  if (netWatch && !netWatch.confirmed) {
    // It ended without this page: kept if the settings are now its own.
    const kept = netView && canonical(netView.settings) === canonical(netWatch.change.settings);
    if (kept) networkResult("confirmed", "The change was confirmed (from another page or address): the new settings are kept.");
    else networkResult("reverted", "The change was not confirmed before its deadline: the previous settings were applied again.");
  }
  netWatch = null;
  if (netTimer) { clearInterval(netTimer); netTimer = null; }
}

let netTicks = 0;
let netPolling = false;

async function networkTick() {
  if (!netWatch) return;
  const left = Math.max(0, Date.parse(netWatch.change.deadline) - (Date.now() + netSkew));
  // Never more than the window, whatever the clocks' rounding says.
  const seconds = Math.min(Math.ceil(left / 1000), netView ? netView.confirm_window_s : Infinity);
  const countdown = $("network-countdown");
  countdown.dataset.remaining = seconds;
  countdown.textContent = left > 0 ? `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}` : "0:00 — reverting…";
  $("network-confirm").disabled = left <= 0;
  // Every two seconds, and every second once the deadline has passed, ask
  // whether it is still pending (it may be confirmed elsewhere, or reverted).
  netTicks += 1;
  if (netPolling || netTicks % (left > 0 ? 4 : 2)) return;
  netPolling = true;
  try {
    await loadNetwork(NET_POLL_TIMEOUT_MS);
    if (netWatch) netWatch.unreachable = 0;
  } catch (_) {
    // This address no longer answers: go to the new one, if known.
    if (netWatch && netWatch.origin && ++netWatch.unreachable >= 2) {
      location.assign(`${netWatch.origin}/#confirm=network:${netWatch.change.id}`);
    }
  } finally {
    netPolling = false;
  }
}

// A poll that has no answer in this long counts as the address gone.
const NET_POLL_TIMEOUT_MS = 3000;

async function loadNetwork(timeoutMs) {
  const { status, data, date } = await request("GET", "/api/v1/system/network", undefined, undefined, {}, timeoutMs);
  if (status !== 200) {
    $("network-managed").textContent = status === 503 ? "(not available on this system)" : "";
    $("network-edit").hidden = true;
    return;
  }
  appliancesClock(date);
  netView = data;
  renderNetwork(data);
  if (!netEdited) { netModel = structuredClone(data.settings); renderNetworkForm(); }
  $("network-apply").disabled = Boolean(data.pending);
  watchPending(data.pending);
}

$("network-preview-button").addEventListener("click", async () => {
  clearNetworkErrors();
  $("network-preview").hidden = true;
  const { status, data } = await api("POST", "/api/v1/system/network/preview", netModel);
  if (status !== 200) { networkProblems(status, data); return; }
  $("network-changes").replaceChildren(...(data.changes.length ? data.changes : ["Nothing would change."])
    .map((line) => el("li", {}, line)));
  $("network-preview").hidden = false;
});

$("network-apply").addEventListener("click", async () => {
  clearNetworkErrors();
  const { status, data, date } = await api("PUT", "/api/v1/system/network", netModel);
  if (status !== 202) { networkProblems(status, data); return; }
  appliancesClock(date);
  netEdited = false;
  $("network-preview").hidden = true;
  $("network-edit").open = false;
  $("network-apply").disabled = true;
  // The countdown starts from the answer: the address this page uses may
  // already be gone (the countdown's polls notice, and go to the new one).
  watchPending(data.pending);
  reloadNetwork();
});

// Load the view; when the appliance does not answer, the countdown's
// polls (while a change is pending) say what to do about it.
function reloadNetwork() {
  loadNetwork().catch(() => {});
}

$("network-reset").addEventListener("click", () => {
  netEdited = false;
  clearNetworkErrors();
  $("network-preview").hidden = true;
  reloadNetwork();
});

async function confirmNetwork(where) {
  const { status, data } = await api("POST", "/api/v1/system/network/confirm", {});
  if (status === 200) {
    if (netWatch) netWatch.confirmed = true;
    networkResult("confirmed", `Confirmed${where}: the new settings are kept.`);
  } else {
    networkResult("failed", errorText(data));
  }
  reloadNetwork();
}

$("network-confirm").addEventListener("click", () => confirmNetwork(""));

// ---------------------------------------------------------------- confirming at a new address

// A change that moves the admin address (a network change, or a move of
// the admin listener) is confirmed on the new address. The page sends the
// admin there with `#confirm=network:ID` or `#confirm=admin` in the URL;
// the session cookie does not follow to another host, so after logging in
// there the page confirms by itself, once, and drops the fragment.
async function confirmOnArrival() {
  const match = location.hash.match(/^#confirm=(network|admin)(?::(\d+))?$/);
  if (!match) return;
  window.history.replaceState(null, "", `${location.pathname}${location.search}`);
  if (match[1] === "network") {
    selectTab("system");
    await loadNetwork().catch(() => {});
    if (netView && netView.pending && String(netView.pending.id) === match[2]) await confirmNetwork(" from the new address");
    else networkResult("failed", "That network change no longer waits for confirmation: it was confirmed or reverted already.");
    return;
  }
  selectTab("config");
  const { status, data } = await api("POST", "/api/v1/config/confirm", {});
  const note = $("config-confirmed");
  note.hidden = false;
  note.className = status === 200 ? "notice" : "refusal";
  note.textContent = status === 200 ? `The admin address ${data.admin} is confirmed; ${data.closed} closes.` : errorText(data);
  note.dataset.confirmed = status === 200;
}

// Where a config that moves the admin listener makes the UI reachable.
function adminOrigin(config) {
  const address = config && config.listen && config.listen.admin;
  const match = typeof address === "string" && address.match(/^(\[[^\]]+\]|[^:]+):(\d+)$/);
  if (!match) return null;
  const host = ["0.0.0.0", "[::]"].includes(match[1]) ? location.host.replace(/:\d+$/, "") : match[1];
  return `${location.protocol}//${host}:${match[2]}`;
}

// ---------------------------------------------------------------- firmware upgrade

function lastUpgradeText(last) {
  if (!last) return null;
  const what = `${last.from_version} → ${last.to_version}`;
  if (last.outcome === "succeeded") return `${what}: succeeded (${last.at})`;
  if (last.outcome === "rolled_back") {
    return `${what}: rolled back to ${last.from_version} (${last.at})${last.reason ? `: ${last.reason}` : ""}`
      + `${last.restored_backup ? "; the database from before the upgrade was restored" : ""}`;
  }
  return `${what}: the appliance came up on another version (${last.at})${last.reason ? `: ${last.reason}` : ""}`;
}

function pendingText(pending) {
  if (!pending) return null;
  return `${pending.to_version} is installed in slot root-${pending.to_slot} (${pending.installed_at}) and starts at the next restart`;
}

function rebootText(plan, mode) {
  if (!plan) return null;
  const when = plan.at ? `at ${plan.at}` : "now";
  const drain = plan.drain_timeout_s ? `, once connections have ended (at most ${plan.drain_timeout_s} s)` : "";
  const disabled = mode === "disabled" ? " (restarting is turned off on this appliance: it is only recorded)" : "";
  return `Restarting ${when}${drain}${disabled}`;
}

function size(bytes) {
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MB`;
  if (bytes >= 1 << 10) return `${(bytes / (1 << 10)).toFixed(1)} KB`;
  return `${bytes} bytes`;
}

// The query for the reboot the form asks for, or an error message.
function rebootQuery(form) {
  const query = new URLSearchParams();
  const reboot = form.get("reboot");
  if (reboot === "later") { query.set("reboot", "later"); return query; }
  if (reboot === "at") {
    const at = new Date(form.get("at") || "");
    if (Number.isNaN(at.getTime())) return "Choose the time to restart at.";
    if (at.getTime() < Date.now()) return "The time to restart at has passed.";
    query.set("reboot", at.toISOString().replace(/\.\d{3}Z$/, "Z"));
  } else {
    query.set("reboot", "now");
  }
  if (form.get("drain")) {
    const seconds = String(form.get("drain_timeout_s") || "").trim();
    if (!/^\d+$/.test(seconds) || Number(seconds) < 1) return "Give the longest wait for connections in whole seconds.";
    query.set("drain_timeout_s", seconds);
  }
  return query;
}

let upload = null; // the XMLHttpRequest of an upload under way

// XMLHttpRequest rather than fetch: only it reports the bytes sent.
function send(file, query, progress) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    upload = xhr;
    xhr.open("POST", `/api/v1/system/upgrade?${query}`);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", (event) => progress(event.loaded, event.lengthComputable ? event.total : file.size));
    xhr.upload.addEventListener("load", () => progress(file.size, file.size, true));
    const done = (status) => {
      upload = null;
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch (_) { /* no JSON body */ }
      resolve({ status, data });
    };
    xhr.addEventListener("load", () => done(xhr.status));
    xhr.addEventListener("error", () => done(0));
    xhr.addEventListener("abort", () => done(-1));
    xhr.send(file);
  });
}

function showSteps(outcome, steps) {
  $("upgrade-result").hidden = false;
  $("upgrade-result").dataset.outcome = outcome;
  $("upgrade-steps").replaceChildren(...steps.map(([state, text]) => el("li", { class: `step ${state}`, "data-step": state }, text)));
}

function refuse(message, steps) {
  $("upgrade-refusal").hidden = false;
  $("upgrade-refusal").textContent = message;
  showSteps("refused", steps);
}

function components(list) {
  return (list || []).map((c) => `${c.name} (${size(c.size)}, SHA-256 ${c.sha256.slice(0, 12)}…)`).join(", ");
}

function plannedReboot(plan, version) {
  if (!plan) return `Restart the appliance when it suits you to start ${version}.`;
  const when = plan.at ? `at ${plan.at}` : "now";
  const drain = plan.drain_timeout_s ? `, once connections through the virtual services have ended (at most ${plan.drain_timeout_s} s)` : "";
  return `The appliance restarts into ${version} ${when}${drain}.`;
}

$("upgrade-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (upload) return;
  const install = event.submitter && event.submitter.value === "install";
  const form = new FormData(event.target);
  const file = form.get("bundle");
  $("upgrade-refusal").hidden = true;
  $("upgrade-result").hidden = true;
  if (!file || !file.size) { refuse("Choose an upgrade bundle (.pgup) first.", []); return; }
  let query = new URLSearchParams();
  if (install) {
    query = rebootQuery(form);
    if (typeof query === "string") { refuse(query, []); return; }
    const when = form.get("reboot") === "later" ? "It restarts only when you restart it."
      : "The appliance restarts into it as chosen.";
    if (!confirm(`Install ${file.name} into the other root slot? ${when}`)) return;
  } else {
    query.set("verify_only", "true");
  }
  const bar = $("upgrade-bar");
  const progress = $("upgrade-progress");
  progress.hidden = false;
  progress.dataset.state = "uploading";
  bar.value = 0;
  $("upgrade-sent").textContent = `Uploading ${file.name}…`;
  for (const button of event.target.querySelectorAll("button[type=submit]")) button.disabled = true;
  $("upgrade-cancel").hidden = false;
  const { status, data } = await send(file, query, (sent, total, finished) => {
    bar.value = total ? Math.round(100 * sent / total) : 0;
    $("upgrade-sent").textContent = finished
      ? `Uploaded ${size(total)}; ${install ? "checking and installing" : "checking"}…`
      : `Uploading ${file.name}: ${size(sent)} of ${size(total)} (${bar.value} %)`;
    if (finished) progress.dataset.state = "checking";
  });
  for (const button of event.target.querySelectorAll("button[type=submit]")) button.disabled = false;
  $("upgrade-cancel").hidden = true;
  progress.dataset.state = status === 200 ? "done" : "failed";
  const uploaded = ["done", `Uploaded ${file.name} (${size(file.size)}).`];
  if (status === 200 && data && data.verified) {
    $("upgrade-sent").textContent = "Checked.";
    showSteps("verified", [uploaded,
      ["done", `Signed with a trusted key; every hash matches: poolgate ${data.version}.`],
      ["done", `Applies to this appliance: it runs ${data.from_version}, and the bundle upgrades from ${data.min_from_version} on.`],
      ["done", `Would install into slot root-${data.slot}: ${components(data.components)}.`],
      ["skipped", "Nothing was written: use Install to install it."]]);
  } else if (status === 200 && data && data.installed) {
    $("upgrade-sent").textContent = "Installed.";
    showSteps("installed", [uploaded,
      ["done", `Signature and every hash checked: poolgate ${data.installed}.`],
      ["done", `Written to slot root-${data.slot}, read back and verified; the current version is kept for a rollback.`],
      ["next", plannedReboot(data.reboot, data.installed)]]);
    event.target.reset();
    drainChoice();
  } else {
    $("upgrade-sent").textContent = status === -1 ? "Upload cancelled." : "Not installed.";
    const reason = status === -1 ? "The upload was cancelled; nothing was written."
      : status === 0 ? "The connection to the appliance was lost before it answered: the Appliance facts above and the event log show what it did."
      : status === 401 ? "Your session has ended: log in again."
      : `Refused: ${errorText(data)}`;
    const outcome = status === 0 ? "The running version is untouched either way."
      : status === 409 ? "The bundle does not apply to this version; nothing was written."
        : "Nothing was written; the appliance runs as before.";
    refuse(reason, [...(status > 0 ? [uploaded] : []), ["failed", outcome]]);
  }
  loadSystem();
});

$("upgrade-cancel").addEventListener("click", () => { if (upload) upload.abort(); });

// Waiting for connections applies only to a restart the appliance makes.
function drainChoice() {
  const later = document.querySelector("#upgrade-form [name=reboot]:checked").value === "later";
  for (const name of ["drain", "drain_timeout_s"]) document.querySelector(`#upgrade-form [name=${name}]`).disabled = later;
}

for (const input of document.querySelectorAll("#upgrade-form [name=reboot]")) input.addEventListener("change", drainChoice);

for (const name of ["certificate", "key"]) {
  document.querySelector(`#certificate-form input[name=${name}_file]`).addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) document.querySelector(`#certificate-form textarea[name=${name}]`).value = await file.text();
  });
}

$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $("password-done").hidden = true;
  if (form.get("new_password") !== form.get("repeat")) { $("password-error").textContent = "The two new passwords differ."; return; }
  const { status, data } = await api("PUT", "/api/v1/session/password", {
    current_password: form.get("current_password"),
    new_password: form.get("new_password"),
    keep_tokens: form.get("keep_tokens") === "on",
  });
  if (status >= 300) { $("password-error").textContent = status === 403 ? "The current password is wrong." : errorText(data); return; }
  event.target.reset();
  $("password-error").textContent = "";
  $("password-done").hidden = false;
});

$("certificate-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const { status, data } = await api("PUT", "/api/v1/certificate", { certificate: form.get("certificate"), key: form.get("key") });
  if (status !== 200) {
    $("certificate-error").textContent = data && data.fields
      ? data.fields.map((f) => `${f.field}: ${f.message}`).join(" ") : errorText(data);
    return;
  }
  $("certificate-error").textContent = "";
  event.target.reset();
  describeCertificate($("certificate-info"), data);
});

// ---------------------------------------------------------------- system → CA bundles

async function loadCaBundles() {
  const { status, data } = await api("GET", "/api/v1/ca-bundles");
  if (status !== 200) return;
  const rows = data.ca_bundles.map((bundle) => el("tr", { "data-bundle": bundle.name },
    el("td", {}, bundle.name),
    el("td", {}, bundle.certificates.map((c) => el("div", { title: `SHA-256 ${c.sha256_fingerprint}` }, c.subject))),
    el("td", {}, bundle.certificates.map((c) => el("div", {}, c.not_after))),
    el("td", {}, bundle.used_by.join(", ") || "—"),
    el("td", {}, el("button", {
      type: "button", disabled: bundle.used_by.length > 0,
      title: bundle.used_by.length ? "In use by monitors; choose another bundle in them first" : null,
      onclick: () => deleteCaBundle(bundle.name),
    }, "Delete"))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "hint" }, "No CA bundle uploaded.")));
  document.querySelector("#ca-bundle-list tbody").replaceChildren(...rows);
}

async function deleteCaBundle(name) {
  if (!confirm(`Delete CA bundle ${name}?`)) return;
  const { status, data } = await api("DELETE", `/api/v1/ca-bundles/${encodeURIComponent(name)}`);
  $("ca-bundle-error").textContent = status === 200 ? "" : errorText(data);
  loadCaBundles();
}

document.querySelector("#ca-bundle-form input[name=pem_file]").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (file) document.querySelector("#ca-bundle-form textarea[name=pem]").value = await file.text();
});

$("ca-bundle-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const name = String(form.get("name"));
  const { status, data } = await request("PUT", `/api/v1/ca-bundles/${encodeURIComponent(name)}`,
    String(form.get("pem")), "application/x-pem-file");
  if (status !== 200) { $("ca-bundle-error").textContent = errorText(data); return; }
  $("ca-bundle-error").textContent = "";
  event.target.reset();
  loadCaBundles();
});

// ---------------------------------------------------------------- system → remote syslog, SNMP

// Both are appliance settings edited as their JSON: the API names the field
// of every problem (servers[0].ca_bundle), which is shown as it comes.
function settingsErrors(data) {
  return Array.isArray(data.fields) && data.fields.length
    ? data.fields.map((f) => `${f.field}: ${f.message}`).join(" ") : errorText(data);
}

function parseSettings(text, error) {
  try { return JSON.parse(text); } catch (e) { error.textContent = `Not JSON: ${e.message}`; return null; }
}

const SYSLOG_EXAMPLE = { servers: [{ host: "logs.example.com", transport: "tcp+tls", ca_bundle: "corp", min_severity: "notice" }] };

async function loadSyslog() {
  const { status, data } = await api("GET", "/api/v1/system/syslog");
  if (status !== 200) return;
  const rows = data.servers.map((s) => el("tr", { "data-server": s.server },
    el("td", {}, s.server), el("td", {}, s.connected ? "yes" : "no"), el("td", {}, String(s.sent)),
    el("td", {}, String(s.dropped)), el("td", {}, s.last_error || "—")));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "5", class: "hint" }, "Remote syslog is off.")));
  document.querySelector("#syslog-servers tbody").replaceChildren(...rows);
  document.querySelector("#syslog-form textarea").value = JSON.stringify(data.settings || SYSLOG_EXAMPLE, null, 2);
}

async function saveSyslog(method, body) {
  const { status, data } = await api(method, "/api/v1/system/syslog", body);
  $("syslog-error").textContent = status === 200 ? "" : settingsErrors(data);
  if (status === 200) loadSyslog();
}

$("syslog-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const settings = parseSettings(new FormData(event.target).get("settings"), $("syslog-error"));
  if (settings) saveSyslog("PUT", settings);
});
$("syslog-off").addEventListener("click", () => saveSyslog("DELETE"));

const SNMP_EXAMPLE = { users: [{ name: "nms", auth_password: "", priv_password: "" }], trap_sinks: [] };

async function loadSnmp() {
  const { status, data } = await api("GET", "/api/v1/system/snmp");
  if (status !== 200) return;
  $("snmp-state").textContent = data.settings
    ? `On: ${data.settings.users.length} v3 user(s), v2c ${data.settings.community ? "on" : "off"}, ${data.settings.trap_sinks.length} trap sink(s)${data.applied_by_root_step ? "" : " (not handed to snmpd on this host)"}.`
    : "SNMP is off.";
  document.querySelector("#snmp-form textarea").value = JSON.stringify(data.settings || SNMP_EXAMPLE, null, 2);
  $("snmp-conf").textContent = data.snmpd_conf || "";
}

async function saveSnmp(method, body) {
  const { status, data } = await api(method, "/api/v1/system/snmp", body);
  $("snmp-error").textContent = status === 200 ? "" : settingsErrors(data);
  if (status === 200) loadSnmp();
}

$("snmp-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const settings = parseSettings(new FormData(event.target).get("settings"), $("snmp-error"));
  if (settings) saveSnmp("PUT", settings);
});
$("snmp-off").addEventListener("click", () => saveSnmp("DELETE"));

async function loadLicence() {
  const { status, data } = await api("GET", "/api/v1/license");
  if (status !== 200) return;
  $("banner").hidden = data.state === "licensed";
  $("banner").textContent = data.message;
  $("licence-status").textContent = `${data.state}: ${data.message}`;
  $("licence-status").dataset.state = data.state;
  $("appliance-id").textContent = data.appliance_id;
  const elsewhere = data.other_appliance_licences || [];
  $("licence-elsewhere").hidden = !elsewhere.length;
  $("licence-elsewhere").textContent = elsewhere.map((l) => `Licence ${l.license_id} (restored from a backup): ${l.message}`).join(" ");
}

$("licence-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const { status, data } = await api("POST", "/api/v1/license", { license: form.get("license") });
  if (status !== 200) { $("licence-error").textContent = errorText(data); return; }
  $("licence-error").textContent = "";
  event.target.reset();
  loadLicence();
});

// ---------------------------------------------------------------- users and roles

// The logged-in role decides what the page shows (`data-needs` elements are
// hidden by the stylesheet for lower roles); the appliance decides what it
// allows, whatever the page shows.
let role = null;
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };

function setRole(value) {
  role = value || null;
  if (role) document.body.dataset.role = role;
  else delete document.body.dataset.role;
  $("who-role").textContent = role ? `(${role})` : "";
}

function mayUse(needs) {
  if (!needs) return true;
  return role !== null && ROLE_RANK[role] >= ROLE_RANK[needs];
}

// An RFC 3339 time as this browser's local time, to the second, in a form
// that keeps its width ("2026-12-02 07:41:05").
function localTime(text) {
  const at = new Date(text);
  if (Number.isNaN(at.getTime())) return text;
  const two = (n) => String(n).padStart(2, "0");
  return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${two(at.getHours())}:${two(at.getMinutes())}:${two(at.getSeconds())}`;
}

function roleSelect(current, onchange) {
  const select = el("select", { "data-field": "role", onchange: (event) => onchange(event.target.value) },
    ...["viewer", "operator", "admin"].map((r) => el("option", { value: r, selected: r === current }, r)));
  return select;
}

async function loadUsers() {
  const { status, data } = await api("GET", "/api/v1/users");
  if (status !== 200) { $("users-error").textContent = errorText(data); return; }
  $("users-error").textContent = "";
  $("users-table").tBodies[0].replaceChildren(...data.users.map((u) => el("tr", { "data-user": u.username },
    el("td", {}, u.username, u.builtin ? el("span", { class: "hint" }, " (built-in)") : ""),
    el("td", {}, u.builtin ? u.role : roleSelect(u.role, (value) => changeUser(u.username, { role: value }))),
    el("td", {}, u.sessions), el("td", {}, u.tokens),
    el("td", {}, el("time", { datetime: u.updated_at }, localTime(u.updated_at))),
    el("td", {},
      el("button", { "data-action": "password", onclick: () => {
        const password = prompt(`New password for ${u.username} (at least 10 characters):`);
        if (password) changeUser(u.username, { password });
      } }, "Set password"), " ",
      u.builtin ? "" : el("button", { class: "danger", "data-action": "remove", onclick: () => removeUser(u.username) }, "Remove")))));
}

async function changeUser(name, body) {
  const what = body.role ? `make ${name} ${body.role}` : `set a new password for ${name}`;
  if (!confirm(`${what}? Their sessions end and their API tokens are revoked.`)) { loadUsers(); return; }
  const { status, data } = await api("PUT", `/api/v1/users/${encodeURIComponent(name)}`, body);
  $("users-error").textContent = status === 200 ? "" : errorText(data);
  loadUsers();
}

async function removeUser(name) {
  if (!confirm(`Remove ${name}? Their sessions end and their API tokens go with them.`)) return;
  const { status, data } = await api("DELETE", `/api/v1/users/${encodeURIComponent(name)}`);
  $("users-error").textContent = status === 204 ? "" : errorText(data);
  loadUsers();
}

$("user-add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { username: form.get("username").trim(), password: form.get("password"), role: form.get("role") };
  const { status, data } = await api("POST", "/api/v1/users", body);
  if (status !== 201) { $("user-add-error").textContent = errorText(data); return; }
  $("user-add-error").textContent = "";
  event.target.reset();
  loadUsers();
});

// The audit log, newest first, a page at a time: `pages` holds the `before`
// of each page shown so far, so "Newer" goes back.
const AUDIT_PAGE = 50;
let auditPages = [null];

function auditQuery(before) {
  const query = new URLSearchParams();
  for (const [key, value] of new FormData($("audit-filter"))) {
    if (!value.trim()) continue;
    // datetime-local is the browser's local time: sent as UTC.
    query.set(key, key === "since" || key === "until" ? new Date(value).toISOString() : value.trim());
  }
  const exportQuery = new URLSearchParams(query);
  exportQuery.set("format", "csv");
  $("audit-csv").href = `/api/v1/audit?${exportQuery}`;
  exportQuery.set("format", "json");
  exportQuery.set("limit", "1000");
  $("audit-json").href = `/api/v1/audit?${exportQuery}`;
  query.set("limit", String(AUDIT_PAGE));
  if (before) query.set("before", String(before));
  return query;
}

function auditDetail(entry) {
  const detail = entry.detail;
  if (!detail) return el("td", { class: "wrap" });
  const cell = el("td", { class: "wrap" }, Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", "));
  if (detail.before_version && detail.after_version && detail.before_version !== detail.after_version) {
    cell.append(" ", el("button", { "data-action": "diff", onclick: () => showDiff(detail.before_version, detail.after_version) }, "Diff"));
  }
  return cell;
}

async function loadAudit(direction) {
  if (direction === "older") auditPages.push(Number($("audit-older").dataset.before));
  else if (direction === "newer") auditPages.pop();
  else auditPages = [null];
  const before = auditPages[auditPages.length - 1];
  const { status, data } = await api("GET", `/api/v1/audit?${auditQuery(before)}`);
  if (status !== 200) return;
  $("audit-table").tBodies[0].replaceChildren(...data.entries.map((e) => el("tr", { "data-kind": e.kind, "data-user": e.username },
    el("td", {}, el("time", { datetime: e.at }, localTime(e.at))),
    el("td", {}, e.username), el("td", {}, e.role || ""), el("td", {}, e.address || ""),
    el("td", {}, e.interface + (e.token_id ? ` #${e.token_id}` : "")),
    el("td", {}, e.kind), el("td", {}, e.action + (e.target ? ` ${e.target}` : "")),
    el("td", {}, e.status === null || e.status === undefined ? "" : String(e.status)),
    auditDetail(e))));
  $("audit-older").hidden = !data.next_before;
  $("audit-older").dataset.before = data.next_before || "";
  $("audit-newer").hidden = auditPages.length <= 1;
}

// A line diff of two config versions (longest common subsequence; configs
// are a few hundred lines).
async function showDiff(beforeId, afterId) {
  const [a, b] = await Promise.all([beforeId, afterId].map((id) => api("GET", `/api/v1/config/versions/${id}`)));
  const out = $("audit-diff");
  out.hidden = false;
  if (a.status !== 200 || b.status !== 200) { out.textContent = errorText(a.status !== 200 ? a.data : b.data); return; }
  const x = a.data.toml.split("\n"), y = b.data.toml.split("\n");
  const n = x.length, m = y.length;
  if (n * m > 4_000_000) { out.textContent = `version ${beforeId}:\n${a.data.toml}\n\nversion ${afterId}:\n${b.data.toml}`; return; }
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = x[i] === y[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const lines = [el("div", {}, `version ${beforeId} → ${afterId}`)];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { lines.push(el("div", {}, `  ${x[i]}`)); i++; j++; }
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) { lines.push(el("div", { class: "add" }, `+ ${y[j]}`)); j++; }
    else { lines.push(el("div", { class: "del" }, `- ${x[i]}`)); i++; }
  }
  out.replaceChildren(...lines);
}

$("audit-filter").addEventListener("submit", (event) => { event.preventDefault(); loadAudit(); });
$("audit-filter").addEventListener("change", () => loadAudit());
$("audit-older").addEventListener("click", () => loadAudit("older"));
$("audit-newer").addEventListener("click", () => loadAudit("newer"));

// ---------------------------------------------------------------- system → HA

// The HA pair: the role in the header of every page, and on the standby a
// banner (on the pages that change the pool config or member states) with
// a link to the active, and those pages' change buttons disabled. The HA
// card on the System tab pairs, fails over, unpairs, and keeps this
// appliance's VRRP settings; all of it follows GET /api/v1/ha, polled.
const HA_POLL_MS = 2000;
let haView = null; // the last GET /api/v1/ha (null: HA not available)
let vrrpView = null; // the last GET /api/v1/ha/vrrp
let haTimer = null;
let vrrpEdited = false;
// The page's change buttons the standby disables (the Status and Configuration tabs).
const HA_CHANGE_BUTTONS = "#pools button[data-action], #config-review, #preview-apply, #wizard-review, #import-form button[type=submit]";
const HA_ROLE_TEXT = { active: "active", standby: "standby", standalone: "single" };
const SYNC_TEXT = {
  unknown: "not known yet", catching_up: "catching up", in_sync: "in sync", following: "following the active",
  unpaired: "unpaired",
};

// `host` and `port` as the authority of a URL (IPv6 in brackets).
function authority(host, port) {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

// "IP:port", "[IPv6]:port" or a bare IP, as [host, port or null].
function splitAddress(text) {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text);
  if (bracketed) return [bracketed[1], bracketed[2]];
  const parts = text.split(":");
  if (parts.length === 2) return [parts[0], parts[1]];
  return [text, null];
}

// Where the active's admin UI is: the shared management address if the
// VRRP settings name one (unless `shared` is false), else the peer's admin
// listener (its sync address's IP when it listens on every address).
function activeAdminUrl(view, shared = true) {
  const peer = view && view.peer;
  if (!peer) return null;
  const [adminHost, adminPort] = peer.admin_address ? splitAddress(peer.admin_address) : [null, null];
  const port = adminPort || location.port || "443";
  const management = vrrpView && vrrpView.settings && vrrpView.settings.management_address;
  if (management && shared) return `https://${authority(management, port)}/`;
  if (adminHost && !["0.0.0.0", "::"].includes(adminHost)) return `https://${authority(adminHost, port)}/`;
  if (!peer.admin_address) return null;
  return `https://${authority(splitAddress(peer.address)[0], port)}/`;
}

// `api`, with a network failure (the appliance restarting, the link to it
// lost) as an answer: the HA card polls and must go on polling.
async function haApi(method, path, body) {
  try {
    return await api(method, path, body);
  } catch (_) {
    return { status: 0, data: { error: "The appliance did not answer." } };
  }
}

function standby() {
  return Boolean(haView && haView.role === "standby");
}

// Disable (or give back) the change buttons; only those this disabled are
// enabled again, so other reasons for a disabled button stay.
function haReadOnly() {
  const readOnly = standby();
  for (const button of document.querySelectorAll(HA_CHANGE_BUTTONS)) {
    if (readOnly && !button.disabled) {
      button.disabled = true;
      button.dataset.haDisabled = "";
      button.title = "Read-only on the standby: make changes on the active";
    } else if (!readOnly && button.dataset.haDisabled !== undefined) {
      button.disabled = false;
      delete button.dataset.haDisabled;
      button.removeAttribute("title");
    }
  }
}

// The header's role and the standby's banner, on the tabs that change the
// pool config or member states.
function haHeader() {
  const role = $("ha-role");
  role.hidden = !haView;
  if (haView) {
    role.textContent = HA_ROLE_TEXT[haView.role] || haView.role;
    role.dataset.role = haView.role;
    role.title = haView.role === "standalone" ? "Not part of an HA pair" : `HA role: ${haView.role}`;
  }
  const tab = document.querySelector("#tabs button.active");
  const banner = $("ha-banner");
  banner.hidden = !standby() || !tab || !["status", "config"].includes(tab.dataset.tab);
  const url = standby() ? activeAdminUrl(haView) : null;
  const target = $("ha-banner-active");
  if (url) target.replaceChildren("Make changes on the active: ", el("a", { href: url, id: "ha-active-link" }, url.replace(/\/$/, "")), ".");
  else target.replaceChildren("Make changes on the active (its address is known once the link is up).");
  haReadOnly();
}

async function loadHa() {
  const { status, data } = await haApi("GET", "/api/v1/ha");
  if (status === 401) { stopHa(); haView = null; haHeader(); return; }
  if (status === 0) { $("ha-role").title = "The appliance did not answer: the role shown is the last one known"; return; }
  const was = haView && haView.role;
  haView = status === 200 ? data : null;
  if (haView && haView.role === "standby" && (was !== "standby" || !vrrpView)) await loadVrrp(false);
  haHeader();
  if (!document.querySelector("[data-panel=system]").hidden) {
    renderHa(status);
    loadVrrp(true);
  }
}

// On every tab switch: the banner follows the tab; the System tab's card
// is filled at once.
function haTab(name) {
  haHeader();
  if (name === "system") loadHa();
}

function startHa() {
  stopHa();
  loadHa();
  haTimer = setInterval(loadHa, HA_POLL_MS);
}

function stopHa() {
  if (haTimer) { clearInterval(haTimer); haTimer = null; }
}

function linkText(view) {
  if (view.link === "up") return "up";
  return view.link_error ? `down: ${view.link_error}` : "down";
}

function renderHa(status) {
  const unavailable = !haView;
  $("ha-unavailable").hidden = !unavailable;
  if (unavailable) {
    $("ha-unavailable").textContent = status === 404
      ? "HA is not available on this listener." : "The HA state cannot be read now.";
    $("ha-unpaired").hidden = true;
    $("ha-paired").hidden = true;
    return;
  }
  const view = haView;
  $("ha-summary").textContent = view.paired ? `(${view.role}, link ${view.link})` : "(not paired)";
  $("ha-unpaired").hidden = view.paired;
  $("ha-paired").hidden = !view.paired;
  $("ha").dataset.role = view.role;
  $("ha").dataset.link = view.link;
  $("ha").dataset.sync = view.sync;
  if (!view.paired) {
    facts($("ha-self"), [
      ["This appliance", view.appliance_id],
      ["Its sync address", view.sync_listen || "none: start poolgate with --ha-listen to pair it"],
      ["Its certificate (SHA-256)", view.fingerprint || "—"],
    ]);
    const listening = Boolean(view.sync_listen);
    $("ha-code-create").disabled = !listening;
    for (const control of $("ha-join-form").querySelectorAll("input, button")) control.disabled = !listening;
    // The code shown goes once it has expired (a code used pairs, and the
    // card changes).
    const shownUntil = Date.parse($("ha-code-expires").getAttribute("datetime") || "");
    if (!$("ha-code").hidden && !(shownUntil > Date.now())) $("ha-code").hidden = true;
    const open = view.pairing_code_expires_at;
    $("ha-code-open").hidden = !open || !$("ha-code").hidden;
    $("ha-code-open").textContent = open ? `A pairing code is open until ${open}; creating a new one replaces it.` : "";
    return;
  }
  $("ha-code").hidden = true;
  const peer = view.peer;
  const adminUrl = activeAdminUrl(view, false);
  const adminText = peer.admin_address || "not known yet";
  facts($("ha-facts"), [
    ["Role", HA_ROLE_TEXT[view.role] || view.role, "role"],
    ["This appliance", `${view.appliance_id} (certificate ${view.fingerprint || "—"})`, "self"],
    ["Peer", peer.appliance_id, "peer"],
    ["Peer address", `${peer.address}${peer.joined_it ? " (its sync listener; this appliance joined it)" : " (it joined this appliance)"}`, "peer-address"],
    ["Peer certificate (SHA-256, pinned)", peer.fingerprint, "peer-fingerprint"],
    ["Peer admin address", view.role === "standby" && adminUrl ? el("a", { href: adminUrl }, adminText) : adminText, "peer-admin"],
    ["Link", linkText(view), "link"],
    ["Sync", SYNC_TEXT[view.sync] || view.sync, "sync"],
    ["Config version here", view.config_version, "config-version"],
    ["Config version on the peer", peer.config_version === null ? "not known yet" : peer.config_version, "peer-config-version"],
    ["Last synced config version", view.last_synced_version === null ? "none yet" : view.last_synced_version, "last-synced"],
    ["Paired since", peer.paired_at, "paired-at"],
  ]);
  $("ha-not-applied").hidden = !view.not_applied.length;
  document.querySelector("#ha-not-applied-list tbody").replaceChildren(...view.not_applied.map((change) =>
    el("tr", { "data-version": change.version }, el("td", {}, change.version), el("td", {}, change.source),
      el("td", {}, change.committed_at), el("td", {}, change.recorded_at))));
  const linkUp = view.link === "up";
  const isStandby = view.role === "standby";
  $("ha-failover").hidden = !isStandby;
  $("ha-force-label").hidden = !isStandby || linkUp;
  $("ha-force-help").hidden = !isStandby || linkUp;
  if (linkUp) $("ha-force").checked = false;
  $("ha-failover").disabled = isStandby && !linkUp && !$("ha-force").checked;
  $("ha-failover-help").textContent = isStandby
    ? linkUp ? "The roles swap through the link: the peer becomes the standby first, then this one the active."
      : "The link to the peer is down: a swap needs it. Only force this if the active is really down."
    : "This appliance is the active: it commits the changes. Make the peer active from the peer's page.";
}

$("ha-force").addEventListener("change", () => renderHa(200));

$("ha-code-create").addEventListener("click", async () => {
  $("ha-code-error").textContent = "";
  const { status, data } = await haApi("POST", "/api/v1/ha/pairing-code", {});
  if (status !== 200) { $("ha-code-error").textContent = errorText(data); return; }
  $("ha-code-value").textContent = data.code;
  $("ha-code-expires").textContent = data.expires_at;
  $("ha-code-expires").setAttribute("datetime", data.expires_at);
  $("ha-code-peer").textContent = haView && haView.sync_listen ? haView.sync_listen : "this appliance's sync address";
  $("ha-code").hidden = false;
  $("ha-code-open").hidden = true;
});

function clearJoinErrors() {
  $("ha-join-errors").replaceChildren();
  for (const node of $("ha-join-form").querySelectorAll(".field-error")) node.remove();
  for (const input of $("ha-join-form").querySelectorAll(".invalid")) input.classList.remove("invalid");
}

$("ha-join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  clearJoinErrors();
  const form = new FormData(event.target);
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  $("ha-join-status").textContent = "Joining…";
  const { status, data } = await haApi("POST", "/api/v1/ha/join", { peer: String(form.get("peer")).trim(), code: String(form.get("code")).trim() });
  button.disabled = false;
  $("ha-join-status").textContent = "";
  if (status === 200) { event.target.reset(); haView = data; haHeader(); renderHa(200); loadHa(); return; }
  if (status === 422 && data && data.fields) showFieldErrors(data.fields, $("ha-join-errors"), $("ha-join-form"));
  else $("ha-join-errors").replaceChildren(el("li", {}, errorText(data)));
});

$("ha-failover").addEventListener("click", async () => {
  const force = !$("ha-force").hidden && $("ha-force").checked;
  const question = force
    ? "Take the active role without the peer? If the peer is still active, both are active until the link returns, and the changes made on the losing side are then listed as not applied."
    : "Make this appliance the active? The peer becomes the standby, and changes are made here from then on.";
  if (!confirm(question)) return;
  $("ha-action-error").textContent = "";
  $("ha-failover").disabled = true;
  const { status, data } = await haApi("POST", "/api/v1/ha/failover", { force });
  if (status !== 200) $("ha-action-error").textContent = errorText(data);
  await loadHa();
});

$("ha-unpair").addEventListener("click", async () => {
  if (!confirm("Unpair? The appliances stop keeping each other in step, and each goes on as a single appliance with the configuration it has.")) return;
  $("ha-action-error").textContent = "";
  const { status, data } = await haApi("DELETE", "/api/v1/ha");
  if (status !== 200) $("ha-action-error").textContent = errorText(data);
  else if (!data.peer_told) $("ha-action-error").textContent = "Unpaired here; the peer could not be told: unpair it on its own page too.";
  await loadHa();
});

// ---- VRRP

const VRRP_FIELDS = ["interface", "virtual_router_id", "priority", "advert_interval_s", "source_v4", "peer_v4",
  "source_v6", "peer_v6", "management_address"];

async function loadVrrp(render) {
  const { status, data } = await haApi("GET", "/api/v1/ha/vrrp");
  if (status === 0) return;
  vrrpView = status === 200 ? data : null;
  if (render) renderVrrp(status);
}

function renderVrrp(status) {
  const view = vrrpView;
  $("vrrp-held").textContent = !view ? (status === 503 ? "(not available on this appliance)" : "")
    : view.addresses_held_by === "keepalived" ? "(keepalived holds the addresses)" : "(off: poolgate holds its addresses itself)";
  $("vrrp-edit").hidden = !view;
  if (!view) return;
  const states = new Map(view.instances.map((instance) => [instance.name, instance]));
  const addressRows = view.addresses.map((address) => {
    const state = address.instance && states.get(address.instance);
    const text = !view.settings ? "— (VRRP off)" : !address.instance ? "no VRRP for this family"
      : state ? state.state : "unknown (keepalived has not reported yet)";
    return el("tr", { "data-address": address.address },
      el("td", {}, address.address), el("td", {}, address.interface), el("td", {}, address.used_by.join(", ")),
      el("td", {}, address.instance || "—"), el("td", { "data-state": state ? state.state : "unknown" }, text));
  });
  if (!addressRows.length) addressRows.push(el("tr", {}, el("td", { colspan: "5", class: "hint" }, "No virtual address in the configuration.")));
  document.querySelector("#vrrp-addresses tbody").replaceChildren(...addressRows);
  const instanceRows = view.instances.map((instance) => el("tr", { "data-instance": instance.name },
    el("td", {}, `${instance.name}${instance.kind === "group" ? " (sync group)" : ""}`),
    el("td", { "data-state": instance.state }, instance.state), el("td", {}, instance.priority), el("td", {}, instance.since)));
  if (!instanceRows.length) instanceRows.push(el("tr", {}, el("td", { colspan: "4", class: "hint" },
    view.settings ? "keepalived has not reported a state yet." : "VRRP is off.")));
  document.querySelector("#vrrp-instances tbody").replaceChildren(...instanceRows);
  $("vrrp-off").disabled = !view.settings;
  if (!vrrpEdited) fillVrrpForm(view.settings);
  if (view.problems.length && !vrrpEdited) {
    $("vrrp-errors").replaceChildren(...view.problems.map((p) => el("li", {}, `${p.field}: ${p.message}`)));
  }
}

function fillVrrpForm(settings) {
  const form = $("vrrp-form");
  for (const name of VRRP_FIELDS) {
    const value = settings ? settings[name] : null;
    form.elements[name].value = value === null || value === undefined ? "" : String(value);
  }
  form.elements.preempt.checked = Boolean(settings && settings.preempt);
}

function clearVrrpErrors() {
  $("vrrp-errors").replaceChildren();
  for (const node of $("vrrp-form").querySelectorAll(".field-error")) node.remove();
  for (const input of $("vrrp-form").querySelectorAll(".invalid")) input.classList.remove("invalid");
}

$("vrrp-form").addEventListener("input", () => { vrrpEdited = true; });

// The form as VRRP settings: empty optional fields left out, numbers as
// numbers (a value that is not one is sent as written, for the field error).
function vrrpSettings(form) {
  const settings = { interface: form.elements.interface.value.trim(), preempt: form.elements.preempt.checked };
  for (const name of ["virtual_router_id", "priority", "advert_interval_s"]) {
    const text = form.elements[name].value.trim();
    if (text !== "") settings[name] = /^\d+$/.test(text) ? Number(text) : text;
  }
  for (const name of ["source_v4", "peer_v4", "source_v6", "peer_v6", "management_address"]) {
    const text = form.elements[name].value.trim();
    if (text !== "") settings[name] = text;
  }
  return settings;
}

async function saveVrrp(method, body) {
  clearVrrpErrors();
  const { status, data } = await haApi(method, "/api/v1/ha/vrrp", body);
  if (status === 200) {
    vrrpView = data;
    vrrpEdited = false;
    renderVrrp(200);
    $("vrrp-errors").replaceChildren(el("li", { class: "saved" }, method === "PUT" ? "Saved: keepalived holds the addresses." : "VRRP is off: poolgate holds its addresses itself."));
    return;
  }
  if (status === 422 && data && data.fields) showFieldErrors(data.fields, $("vrrp-errors"), $("vrrp-form"));
  else $("vrrp-errors").replaceChildren(el("li", {}, errorText(data)));
}

$("vrrp-form").addEventListener("submit", (event) => {
  event.preventDefault();
  saveVrrp("PUT", vrrpSettings(event.target));
});

$("vrrp-off").addEventListener("click", () => {
  if (!confirm("Turn VRRP off? keepalived gives up the addresses and poolgate holds them itself again.")) return;
  saveVrrp("DELETE");
});

// ---------------------------------------------------------------- system → backup & restore

let restoreBody = null; // the previewed {passphrase, archive} awaiting "Restore now"

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function resetRestore() {
  restoreBody = null;
  $("restore-preview").hidden = true;
}

$("backup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  if (form.get("passphrase") !== form.get("repeat")) { $("backup-error").textContent = "The two passphrases differ."; return; }
  const response = await fetch("/api/v1/system/backup", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf || "" },
    body: JSON.stringify({ passphrase: form.get("passphrase"), network: form.get("network") === "on" }),
  });
  if (response.status !== 200) {
    let data = null;
    try { data = await response.json(); } catch (_) { /* empty body */ }
    $("backup-error").textContent = errorText(data);
    return;
  }
  $("backup-error").textContent = "";
  const disposition = response.headers.get("Content-Disposition") || "";
  const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "poolgate.pgbackup";
  download(await response.blob(), name);
  event.target.reset();
});

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function restoreFacts(p) {
  const list = (items) => (items && items.length ? items.join(", ") : "none");
  const admin = p.admin_states.map((a) => `${a.pool}/${a.member}: ${a.now || "—"} → ${a.restored || "—"}`);
  const facts = [
    ["Made", `${p.made_at} by poolgate ${p.made_by_version} on appliance ${p.from_appliance}${p.other_appliance ? " (another appliance)" : ""}`],
    ["Config version", `${p.config_version_now} now → ${p.config_version_restored} (${p.config_versions_in_archive} versions in the backup)`],
    ["Admin states", list(admin)],
    ["Users added", list(p.users_added)],
    ["Users removed", list(p.users_removed)],
    ["Passwords changed", list(p.users_changed)],
    ["API tokens", `${p.api_tokens_now} now → ${p.api_tokens_restored}`],
    ["Certificate", p.certificate_restored ? `${p.certificate_subject_restored} (SHA-256 ${p.certificate_restored})${p.certificate_restored === p.certificate_now ? ", the one in use" : ""}` : "none in the backup"],
    ["CA bundles", `${list(p.ca_bundles_now)} now → ${list(p.ca_bundles_restored)}`],
    ["Licences", list(p.licences.map((l) => `${l.license_id}: ${l.message}`))],
  ];
  if (p.listen_kept) facts.push(["Listen addresses", "this appliance's own are kept where the backup's differ"]);
  if (p.network_settings || p.vrrp_settings) facts.push(["Network settings", "in the backup, not applied: set them under Network"]);
  facts.push(["Sessions", "everyone is logged out"]);
  return facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]);
}

$("restore-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  resetRestore();
  const form = new FormData(event.target);
  const file = form.get("archive");
  if (!(file instanceof File) || !file.size) { $("restore-error").textContent = "Choose a backup file."; return; }
  const body = { passphrase: String(form.get("passphrase")), archive: await fileBase64(file) };
  const { status, data } = await api("POST", "/api/v1/system/restore/preview", body);
  if (status !== 200) { $("restore-error").textContent = errorText(data); return; }
  $("restore-error").textContent = "";
  restoreBody = body;
  document.querySelector("#restore-preview dl").replaceChildren(...restoreFacts(data));
  $("restore-preview").hidden = false;
});

$("restore-apply").addEventListener("click", async () => {
  if (!restoreBody || !confirm("Restore this backup? Everyone is logged out.")) return;
  const { status, data } = await api("POST", "/api/v1/system/restore", restoreBody);
  if (status !== 200) { $("restore-error").textContent = errorText(data); return; }
  resetRestore();
  $("restore-form").reset();
  csrf = null;
  if (stream) stream.close();
  show("login");
  $("login-error").textContent = `Restored config version ${data.version}. Log in with a user from the backup.`;
});

// ---------------------------------------------------------------- session

async function enterDashboard(username, userRole) {
  setRole(userRole);
  $("who").textContent = username;
  show("dashboard");
  selectTab("status");
  await loadHistory();
  const { data } = await api("GET", "/api/v1/status");
  if (data) renderStatus(data);
  loadLicence();
  startStream();
  startHa();
  confirmOnArrival();
}

async function boot() {
  const health = await api("GET", "/api/v1/health");
  $("version").textContent = health.data ? `poolgate ${health.data.version}` : "";
  if (health.data && health.data.setup_required) {
    $("setup-code-label").hidden = !health.data.setup_code_required;
    return show("setup");
  }
  const session = await api("GET", "/api/v1/session");
  if (session.status === 200) {
    csrf = session.data.csrf_token;
    return enterDashboard(session.data.username, session.data.role);
  }
  show("login");
}

$("setup-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  if (form.get("password") !== form.get("repeat")) { $("setup-error").textContent = "The two passwords differ."; return; }
  const body = { password: form.get("password") };
  if (form.get("setup_code")) body.setup_code = form.get("setup_code");
  const { status, data } = await api("POST", "/api/v1/setup", body);
  if (status !== 201) { $("setup-error").textContent = errorText(data); return; }
  show("login");
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const { status, data } = await api("POST", "/api/v1/session", { username: form.get("username"), password: form.get("password") });
  if (status !== 200) { $("login-error").textContent = status === 401 ? "Wrong user or password." : errorText(data); return; }
  csrf = data.csrf_token;
  event.target.reset();
  $("login-error").textContent = "";
  enterDashboard(data.username, data.role);
});

$("logout").addEventListener("click", async () => {
  await api("DELETE", "/api/v1/session");
  csrf = null;
  if (stream) stream.close();
  stopHa();
  stopStats();
  haView = null;
  vrrpView = null;
  haHeader();
  if (netTimer) { clearInterval(netTimer); netTimer = null; }
  netWatch = null;
  netEdited = false;
  model = null;
  edited = false;
  pending = null;
  renderEditor();
  $("preview").hidden = true;
  setRole(null);
  show("login");
});

boot();

// Users → Directory login: the settings as JSON (the API's field errors
// shown as they come), and a test login that says where it stopped.
const DIRECTORY_EXAMPLE = { servers: ["ldaps://dc1.contoso.com"], ca_bundle: "contoso", bind: "user",
  user_bind: "{user}@contoso.com", user_base: "dc=contoso,dc=com", user_attribute: "sAMAccountName",
  groups: [{ group: "CN=poolgate-admins,OU=Groups,DC=contoso,DC=com", role: "admin" }] };

async function loadDirectory() {
  const { status, data } = await api("GET", "/api/v1/auth/ldap");
  if (status !== 200) return;
  $("directory-state").textContent = data.settings
    ? `On: ${data.settings.servers.join(", ")}, ${data.settings.groups.length} group mapping(s).` : "Off: local users only.";
  document.querySelector("#directory-form textarea").value = JSON.stringify(data.settings || DIRECTORY_EXAMPLE, null, 2);
}

async function saveDirectory(method, body) {
  const { status, data } = await api(method, "/api/v1/auth/ldap", body);
  $("directory-error").textContent = status === 200 ? "" : settingsErrors(data);
  if (status === 200) loadDirectory();
}

$("directory-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const settings = parseSettings(new FormData(event.target).get("settings"), $("directory-error"));
  if (settings) saveDirectory("PUT", settings);
});
$("directory-off").addEventListener("click", () => saveDirectory("DELETE"));
$("directory-test").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const settings = parseSettings(document.querySelector("#directory-form textarea").value, $("directory-error"));
  if (!settings) return;
  const { status, data } = await api("POST", "/api/v1/auth/ldap/test",
    { username: form.get("username"), password: form.get("password"), settings });
  const out = $("directory-result");
  if (status !== 200) { out.textContent = settingsErrors(data); out.className = "error"; return; }
  out.className = data.ok ? "" : "error";
  out.textContent = data.ok
    ? `OK: ${data.login.dn} (via ${data.login.server}) logs in as ${data.login.role}; groups: ${data.login.groups.join("; ") || "none"}.`
    : `Refused: ${data.error}`;
});
