// poolgate admin UI: plain JavaScript, no build step. Talks only to the
// REST API; live status arrives as server-sent events.
"use strict";

const $ = (id) => document.getElementById(id);
let csrf = null;
let stream = null;

function show(section) {
  for (const id of ["setup", "login", "dashboard"]) $(id).hidden = id !== section;
  $("logout").hidden = section !== "dashboard";
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch (_) { /* empty body */ }
  return { status: response.status, data };
}

function errorText(data) {
  if (!data) return "Something went wrong.";
  if (data.fields && data.fields.length) return data.fields.map((f) => f.message).join(" ");
  return data.error || "Something went wrong.";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
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

function drainCell(member) {
  if (!member.drain) return el("td");
  const done = member.drain.state === "drained";
  const label = done ? "ready to take offline"
    : `draining, ${member.drain.active_connections} connections left${member.drain.overdue ? " (overdue)" : ""}`;
  return el("td", { class: "drain", "data-drain": member.drain.state },
    el("div", { class: `progress${done ? " done" : ""}` }, el("div", { style: `width:${done ? 100 : 40}%` })),
    label);
}

async function act(pool, member, action) {
  if (action !== "enable" && !confirm(`${action} ${member}? ${action === "drain"
      ? "It stops taking new clients; existing ones continue until they end."
      : "It leaves every answer and its connections are reset after a short grace."}`)) return;
  const { status, data } = await api("POST", `/api/v1/pools/${encodeURIComponent(pool)}/members/${encodeURIComponent(member)}/${action}`, {});
  if (status !== 200) alert(errorText(data));
}

function renderStatus(status) {
  const pools = $("pools");
  pools.replaceChildren();
  for (const pool of status.pools) {
    const rows = pool.members.map((m) => el("tr", { "data-member": m.name, "data-admin-state": m.admin_state },
      el("td", {}, m.name), el("td", {}, m.address),
      el("td", { class: `state-${m.admin_state}` }, m.admin_state),
      healthCell(m.health), drainCell(m),
      el("td", {}, m.active_connections),
      el("td", {},
        el("button", { onclick: () => act(pool.name, m.name, "drain"), "data-action": "drain" }, "Drain"), " ",
        el("button", { onclick: () => act(pool.name, m.name, "enable"), "data-action": "enable" }, "Enable"), " ",
        el("button", { class: "danger", onclick: () => act(pool.name, m.name, "disable"), "data-action": "disable" }, "Disable"))));
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
}

async function loadEvents() {
  const { status, data } = await api("GET", "/api/v1/events?limit=50");
  if (status !== 200) return;
  $("events").replaceChildren(...data.events.map((e) => {
    const who = e.member && !e.message.includes(`${e.pool}/${e.member}`) ? `${e.pool}/${e.member} ` : "";
    return el("li", { "data-kind": e.kind }, el("time", {}, e.at), who, e.message);
  }));
}

async function loadLicence() {
  const { status, data } = await api("GET", "/api/v1/license");
  if (status !== 200) return;
  $("banner").hidden = data.state === "licensed";
  $("banner").textContent = data.message;
  $("licence-status").textContent = `${data.state}: ${data.message}`;
  $("licence-status").dataset.state = data.state;
  $("appliance-id").textContent = data.appliance_id;
}

function startStream() {
  if (stream) stream.close();
  stream = new EventSource("/api/v1/status/stream");
  stream.addEventListener("status", (event) => { renderStatus(JSON.parse(event.data)); loadEvents(); });
}

async function enterDashboard(username) {
  $("who").textContent = username;
  show("dashboard");
  const { data } = await api("GET", "/api/v1/status");
  if (data) renderStatus(data);
  loadEvents();
  loadLicence();
  startStream();
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
    return enterDashboard(session.data.username);
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
  enterDashboard(data.username);
});

$("registrar-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const uri = new FormData(event.target).get("uri");
  const { status, data } = await api("GET", `/api/v1/registrar?uri=${encodeURIComponent(uri)}`);
  const result = $("registrar-result");
  if (status !== 200) { result.textContent = errorText(data); result.className = "error"; return; }
  result.className = "";
  result.replaceChildren(
    el("span", { "data-home": data.home }, `Home server: ${data.home}. `),
    `Registers with: ${data.physical.join(" → ")}`,
    data.backup_mode ? el("strong", {}, " (backup mode: the home server is out of service)") : "",
    el("br"), `Full failover order: ${data.logical.join(" → ")}`);
});

$("licence-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const { status, data } = await api("POST", "/api/v1/license", { license: form.get("license") });
  if (status !== 200) { $("licence-error").textContent = errorText(data); return; }
  $("licence-error").textContent = "";
  event.target.reset();
  loadLicence();
  loadEvents();
});

$("logout").addEventListener("click", async () => {
  await api("DELETE", "/api/v1/session");
  csrf = null;
  if (stream) stream.close();
  show("login");
});

boot();
