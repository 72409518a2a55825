// gridwatch console: alert list, alert page with the meter's load curve, and service status.
// Plain JavaScript with no dependencies; every request goes to the daemon that served the page.
"use strict";

const REFRESH_MS = 5000;
const SEVERITIES = ["info", "low", "medium", "high", "critical"];
const STATUSES = ["open", "acknowledged", "resolved"];
const FILTERS = ["status", "region", "kind", "severity", "meter"];
const PLOT_HOURS = 168;

let refreshTimer = null;

// ---- HTTP ----------------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem("gridwatch-token") || "";
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const reason = (data && data.error) || text.trim() || response.statusText;
    const error = new Error(`${method} ${path} returned ${response.status}: ${reason}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

async function metrics() {
  const response = await fetch("/metrics");
  const text = await response.text();
  const values = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return values;
}

// ---- helpers -------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function time(ms) {
  if (ms === null || ms === undefined) return "";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

function number(value, digits = 2) {
  if (typeof value !== "number" || !Number.isFinite(value)) return String(value ?? "");
  return value.toLocaleString("en-GB", { maximumFractionDigits: digits });
}

function severity(value) {
  return el("span", { class: `severity ${value}` }, value);
}

function statusPill(value) {
  return el("span", { class: `status-pill ${value}` }, value);
}

function notice(message) {
  const box = document.getElementById("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function stopRefresh() {
  if (refreshTimer) clearInterval(refreshTimer);
  refreshTimer = null;
}

// ---- alert list ----------------------------------------------------------------------------

function alertsQuery(filters, cursor) {
  const query = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) query.set(name, filters[name]);
  query.set("limit", "50");
  if (cursor) query.set("cursor", cursor);
  return `/api/alerts?${query}`;
}

function alertRow(alert) {
  return el(
    "tr",
    { class: "alert-row", "data-id": alert.id, onclick: () => (location.hash = `#/alerts/${alert.id}`) },
    el("td", {}, severity(alert.severity)),
    el("td", {}, alert.kind),
    el("td", {}, `${alert.region}/${alert.meter}`),
    el("td", {}, statusPill(alert.status)),
    el("td", {}, alert.message),
    el("td", {}, time(alert.last_seen_ms)),
    el("td", { class: "num" }, alert.count),
  );
}

function filterForm(filters) {
  const field = (name, control) => el("label", {}, name, control);
  const choice = (name, options, label) => {
    const select = el("select", { name }, el("option", { value: "" }, label));
    for (const option of options) {
      select.append(el("option", { value: option }, option));
    }
    select.value = filters[name] || "";
    return select;
  };
  const text = (name) => el("input", { name, value: filters[name] || "", size: 12 });
  const form = el(
    "form",
    { class: "filters", id: "filters" },
    field("status", choice("status", STATUSES, "any")),
    field("severity (minimum)", choice("severity", SEVERITIES, "any")),
    field("region", text("region")),
    field("kind", text("kind")),
    field("meter", text("meter")),
    el("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    location.hash = `#/alerts?${query}`;
  });
  return form;
}

async function alertList(filters) {
  const body = el("tbody", { id: "alert-rows" });
  const updated = el("span", { class: "meta", id: "updated" });
  const more = el("button", { class: "secondary", id: "more", hidden: "" }, "Load more");
  let cursor = null;
  let pages = 1;

  const table = el(
    "table",
    { id: "alerts" },
    el(
      "thead",
      {},
      el("tr", {}, ["severity", "kind", "meter", "status", "message", "last firing", "firings"].map((h) => el("th", {}, h))),
    ),
    body,
  );
  show(el("h1", {}, "Alerts"), filterForm(filters), table, el("p", {}, more, " ", updated));

  async function load(append) {
    try {
      const page = await api("GET", alertsQuery(filters, append ? cursor : null));
      const rows = page.alerts.map(alertRow);
      if (append) body.append(...rows);
      else body.replaceChildren(...rows);
      if (!append && rows.length === 0) {
        body.append(el("tr", {}, el("td", { colspan: 7, class: "meta" }, "No alerts match.")));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
      notice("");
    } catch (error) {
      notice(error.message);
    }
  }

  more.addEventListener("click", () => {
    pages += 1;
    load(true);
  });
  await load(false);
  // Live refresh of the first page; once more pages are open, refreshing would drop them.
  refreshTimer = setInterval(() => {
    if (pages === 1) load(false);
  }, REFRESH_MS);
}

// ---- alert page ----------------------------------------------------------------------------

function evidenceTable(evidence) {
  const rows = Object.entries(evidence || {}).map(([name, value]) =>
    el("tr", {}, el("th", {}, name), el("td", { class: "num" }, typeof value === "object" ? JSON.stringify(value) : number(value, 3))),
  );
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { class: "meta" }, "No evidence recorded.")));
  return el("table", { id: "evidence" }, el("tbody", {}, rows));
}

function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

// Baseline: the median hourly power before the alert's first firing, or the longest window's
// base load when the curve starts after it.
function baseline(meter, hours, alert) {
  const before = hours.filter((h) => h.start_ms < alert.first_seen_ms && h.covered_secs > 0);
  if (before.length >= 6) {
    return { kw: median(before.map((h) => h.energy_kwh)), label: "median before the first firing" };
  }
  const windows = [...(meter.windows || [])].sort((a, b) => b.hours - a.hours);
  if (windows.length > 0) return { kw: windows[0].base_kw, label: `base load (${windows[0].name})` };
  return null;
}

function loadCurve(meter, alert) {
  const hours = (meter.hourly || []).filter((h) => h.covered_secs > 0);
  const figure = el("figure", { id: "curve" });
  if (hours.length < 2) {
    figure.append(el("p", { class: "meta" }, "Not enough hourly data held for this meter to draw a curve."));
    return figure;
  }
  const width = 900;
  const height = 260;
  const pad = { left: 48, right: 12, top: 12, bottom: 28 };
  const start = hours[0].start_ms;
  const end = hours[hours.length - 1].start_ms + 3600e3;
  const base = baseline(meter, hours, alert);
  const top = Math.max(...hours.map((h) => h.energy_kwh), base ? base.kw : 0) * 1.1 || 1;
  const x = (ms) => pad.left + ((ms - start) / (end - start)) * (width - pad.left - pad.right);
  const y = (kw) => height - pad.bottom - (kw / top) * (height - pad.top - pad.bottom);

  const plot = svg("svg", { id: "plot", viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  plot.append(svg("title", {}, `Hourly load of ${alert.region}/${alert.meter}`));
  const windowStart = Math.max(alert.first_seen_ms, start);
  const windowEnd = Math.min(alert.last_seen_ms + 3600e3, end);
  if (windowEnd > windowStart) {
    plot.append(
      svg("rect", {
        class: "window",
        x: x(windowStart),
        y: pad.top,
        width: x(windowEnd) - x(windowStart),
        height: height - pad.top - pad.bottom,
      }),
    );
  }
  plot.append(svg("line", { class: "axis", x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0) }));
  for (let i = 0; i <= 4; i += 1) {
    const kw = (top / 4) * i;
    plot.append(svg("text", { x: pad.left - 6, y: y(kw) + 4, "text-anchor": "end" }, number(kw, 1)));
  }
  plot.append(svg("text", { x: 4, y: pad.top + 8 }, "kW"));
  const days = Math.max(1, Math.round((end - start) / 86400e3 / 6));
  for (let ms = Math.ceil(start / 86400e3) * 86400e3; ms < end; ms += days * 86400e3) {
    plot.append(svg("text", { x: x(ms), y: height - 8, "text-anchor": "middle" }, new Date(ms).toISOString().slice(5, 10)));
  }
  // An hour's energy in kWh is its mean power in kW.
  const points = hours.map((h) => `${x(h.start_ms + 1800e3).toFixed(1)},${y(h.energy_kwh).toFixed(1)}`);
  plot.append(svg("polyline", { class: "curve", points: points.join(" ") }));
  if (base) {
    plot.append(svg("line", { class: "baseline", x1: pad.left, y1: y(base.kw), x2: width - pad.right, y2: y(base.kw) }));
  }
  figure.append(
    plot,
    el(
      "div",
      { class: "legend" },
      el("span", { class: "l-curve" }, "hourly mean power"),
      base ? el("span", { class: "l-baseline" }, `baseline ${number(base.kw)} kW, ${base.label}`) : null,
      el("span", { class: "l-window" }, "alert window"),
    ),
  );
  return figure;
}

function actionList(actions) {
  if (!actions || actions.length === 0) return el("p", { class: "meta" }, "No actions yet.");
  return el(
    "ul",
    { id: "actions" },
    actions.map((a) => el("li", {}, `${time(a.at_ms)}: ${a.action} by ${a.by}`, a.comment ? ` (${a.comment})` : "")),
  );
}

async function alertPage(id) {
  let alert;
  try {
    alert = await api("GET", `/api/alerts/${encodeURIComponent(id)}`);
  } catch (error) {
    show(el("h1", {}, "Alert"), el("p", {}, error.message));
    return;
  }
  let meter = { hourly: [], windows: [] };
  try {
    const path = `/api/meters/${encodeURIComponent(alert.region)}/${encodeURIComponent(alert.meter)}`;
    meter = await api("GET", `${path}?hours=${PLOT_HOURS}`);
  } catch (error) {
    notice(error.message);
  }

  const comment = el("input", { id: "comment", placeholder: "comment (optional)" });
  const act = (action) => async () => {
    try {
      const text = comment.value.trim();
      await api("POST", `/api/alerts/${encodeURIComponent(id)}/${action}`, text ? { comment: text } : {});
      notice("");
      await alertPage(id);
    } catch (error) {
      notice(error.message);
    }
  };
  const resolved = alert.status === "resolved";
  const ack = el("button", { id: "ack", onclick: act("ack") }, "Acknowledge");
  const resolve = el("button", { id: "resolve", class: "secondary", onclick: act("resolve") }, "Resolve");
  ack.disabled = resolved || alert.status === "acknowledged";
  resolve.disabled = resolved;

  show(
    el("p", {}, el("a", { href: "#/alerts" }, "All alerts")),
    el("h1", {}, severity(alert.severity), ` ${alert.kind} on ${alert.region}/${alert.meter} `, statusPill(alert.status)),
    el("p", { id: "message" }, alert.message),
    el("div", { class: "actions" }, comment, ack, resolve),
    el("h2", {}, "Load curve"),
    loadCurve(meter, alert),
    el(
      "div",
      { class: "grid" },
      el(
        "div",
        { class: "card" },
        el("h2", {}, "Alert"),
        el(
          "dl",
          {},
          el("dt", {}, "id"), el("dd", {}, alert.id),
          el("dt", {}, "first firing"), el("dd", {}, time(alert.first_seen_ms)),
          el("dt", {}, "last firing"), el("dd", {}, time(alert.last_seen_ms)),
          el("dt", {}, "firings"), el("dd", {}, alert.count),
          el("dt", {}, "rule"), el("dd", {}, alert.source ? alert.source.rule : ""),
        ),
      ),
      el("div", { class: "card" }, el("h2", {}, "Statistics that fired"), evidenceTable(alert.evidence)),
      el("div", { class: "card" }, el("h2", {}, "Actions"), actionList(alert.actions)),
    ),
  );
}

// ---- status page ---------------------------------------------------------------------------

function labelled(values, name) {
  const rows = [];
  for (const [key, value] of Object.entries(values)) {
    if (!key.startsWith(`${name}{`)) continue;
    const labels = {};
    for (const match of key.slice(name.length + 1, -1).matchAll(/(\w+)="([^"]*)"/g)) {
      labels[match[1]] = match[2];
    }
    rows.push({ labels, value });
  }
  return rows;
}

function healthCard(title, entries) {
  return el(
    "div",
    { class: "card" },
    el("h2", {}, title),
    el("dl", {}, entries.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
  );
}

function okPill(ok, good, bad) {
  return el("span", { class: `status-pill ${ok ? "ok" : "bad"}` }, ok ? good : bad);
}

async function statusPage() {
  let values;
  try {
    values = await metrics();
  } catch (error) {
    show(el("h1", {}, "Status"), el("p", {}, error.message));
    return;
  }
  const metric = (name) => values[name] ?? 0;
  let webhooks = [];
  let status = { rules: { files: [], errors: [] }, plugins: { loaded: [], failures: [] } };
  try {
    [webhooks, status] = await Promise.all([
      api("GET", "/api/webhooks").then((body) => body.webhooks),
      api("GET", "/api/status"),
    ]);
  } catch (error) {
    notice(error.message);
  }
  const sum = (name) => labelled(values, name).reduce((total, row) => total + row.value, 0);
  const hash = (text) => el("code", { title: text }, (text || "").slice(0, 12));
  const micros = (seconds, count) => (count > 0 ? number((seconds / count) * 1e6, 1) : "");
  const ruleRows = status.rules.files.map((file) =>
    el(
      "tr",
      {},
      el("td", {}, file.rule),
      el("td", {}, hash(file.content_hash)),
      el("td", { class: "num" }, number(file.evaluations, 0)),
      el("td", { class: "num" }, micros(file.evaluation_seconds, file.evaluations)),
    ),
  );
  const pluginRows = status.plugins.loaded.map((plugin) =>
    el(
      "tr",
      {},
      el("td", {}, plugin.name),
      el("td", {}, plugin.version),
      el("td", {}, plugin.file),
      el("td", {}, hash(plugin.content_hash)),
      el("td", { class: "num" }, number(plugin.readings, 0)),
      el("td", { class: "num" }, micros(plugin.call_seconds, plugin.readings)),
      el("td", {}, okPill(!plugin.quarantined, "running", "quarantined")),
    ),
  );
  const errorRows = [...status.rules.errors, ...status.plugins.failures].map((row) =>
    el("tr", {}, el("td", {}, Object.values(row.labels).join(" ")), el("td", { class: "num" }, row.count)),
  );
  const lastReload = status.rules.last_reload;
  const reloadText = lastReload
    ? `${lastReload.succeeded ? "succeeded" : "failed"} ${time(lastReload.at_ms)}`
    : "none since start-up";

  show(
    el("h1", {}, "Status"),
    el(
      "div",
      { class: "grid", id: "health" },
      healthCard("Broker", [
        ["connection", okPill(metric("gridwatch_mqtt_connected") === 1, "connected", "disconnected")],
        ["failed connection attempts", number(metric("gridwatch_mqtt_connection_errors_total"), 0)],
        ["readings received", number(metric("gridwatch_readings_received_total"), 0)],
        ["readings accepted", number(metric("gridwatch_readings_accepted_total"), 0)],
        ["messages rejected", number(sum("gridwatch_readings_rejected_total"), 0)],
        ["meters held", number(metric("gridwatch_meters"), 0)],
      ]),
      healthCard("Store", [
        ["commits", okPill(metric("gridwatch_store_healthy") === 1, "healthy", "failing")],
        ["batch commits", number(metric("gridwatch_store_commits_total"), 0)],
      ]),
      healthCard("Rules", [
        ["rule set", okPill(!status.rules.stale, "current", "stale: last reload failed")],
        ["files", status.rules.files.length],
        ["last reload", reloadText],
        ["rule errors", number(sum("gridwatch_rule_errors_total"), 0)],
      ]),
      healthCard("Plugins", [
        ["loaded", number(metric("gridwatch_plugins_loaded"), 0)],
        ["failures", number(sum("gridwatch_plugin_failures_total"), 0)],
        ["quarantined", number(labelled(values, "gridwatch_plugin_quarantined").filter((r) => r.value > 0).length, 0)],
      ]),
    ),
    el("h2", {}, "Webhooks"),
    el(
      "table",
      { id: "webhooks" },
      el("thead", {}, el("tr", {}, ["name", "endpoint", "state", "outbox", "dead letters"].map((h) => el("th", {}, h)))),
      el(
        "tbody",
        {},
        webhooks.map((w) =>
          el(
            "tr",
            {},
            el("td", {}, w.name),
            el("td", {}, w.url || ""),
            el("td", {}, okPill(w.enabled, "enabled", `disabled${w.disabled_reason ? `: ${w.disabled_reason}` : ""}`)),
            el("td", { class: "num" }, w.outbox_depth),
            el("td", { class: "num" }, w.dead_letters),
          ),
        ),
      ),
    ),
    el("h2", {}, "Plugins"),
    pluginRows.length
      ? el(
          "table",
          { id: "plugins" },
          el("thead", {}, el("tr", {}, ["name", "version", "file", "content hash", "readings", "µs per reading", "state"].map((h) => el("th", {}, h)))),
          el("tbody", {}, pluginRows),
        )
      : el("p", { class: "meta" }, "No plugins loaded."),
    el("h2", {}, "Rule files"),
    el(
      "table",
      { id: "rules" },
      el("thead", {}, el("tr", {}, ["file", "content hash", "evaluations", "µs per evaluation"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ruleRows),
    ),
    el("h2", {}, "Rule errors and plugin failures"),
    errorRows.length
      ? el("table", { id: "errors" }, el("tbody", {}, errorRows))
      : el("p", { class: "meta" }, "None since start-up."),
  );
}

// ---- routing -------------------------------------------------------------------------------

async function route() {
  stopRefresh();
  notice("");
  const hash = location.hash || "#/alerts";
  const [path, queryText] = hash.slice(1).split("?");
  document.getElementById("nav-alerts").classList.toggle("active", path.startsWith("/alerts"));
  document.getElementById("nav-status").classList.toggle("active", path === "/status");
  if (!token() && path !== "/status") {
    notice("Enter an API token (read scope to view, write scope to acknowledge and resolve).");
  }
  if (path.startsWith("/alerts/")) {
    await alertPage(decodeURIComponent(path.slice("/alerts/".length)));
  } else if (path === "/status") {
    await statusPage();
    refreshTimer = setInterval(statusPage, REFRESH_MS);
  } else {
    const query = new URLSearchParams(queryText || "");
    const filters = {};
    for (const name of FILTERS) filters[name] = query.get(name) || "";
    await alertList(filters);
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem("gridwatch-token", input.value.trim());
  input.value = "";
  route();
});
window.addEventListener("hashchange", route);
route();
