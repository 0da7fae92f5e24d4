// edge-gateway dev cloud dashboard: live things, shadows and events over Server-Sent Events.
// Plain JS, no dependencies. Every DOM update is keyed, so 50 things stay cheap and a control
// the user is dragging or typing in is never overwritten under the pointer.
"use strict";

const state = { things: new Map(), selected: null, signed: new Set(), offset: 0, agents: new Map(), agent: null };
const $ = (id) => document.getElementById(id);
// This run's token, served inside the page only: every change sends it back, so other pages in
// the browser (which cannot read this page) cannot make changes through the dashboard's API.
const TOKEN = document.querySelector('meta[name="dashboard-token"]')?.content || "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const json = (value) => (value === undefined ? "" : JSON.stringify(value));
const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`;
const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

// --- the live feed ------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  source.onopen = () => { $("feed").dataset.state = "live"; $("feed").textContent = "live"; };
  source.onerror = () => { $("feed").dataset.state = "down"; $("feed").textContent = "reconnecting…"; };
  source.onmessage = (message) => {
    const data = JSON.parse(message.data);
    if (data.type === "snapshot") {
      syncClock(data.now);
      state.things = new Map(data.things.map((t) => [t.thing, t]));
      renderList();
      loadAgents();
      if (state.agent) renderAgentDetail();
      else if (!state.selected || !state.things.has(state.selected)) select(initialSelection());
      else renderDetail();
    } else if (data.type === "mindconnect") {
      state.agents.set(data.agent.clientId, data.agent);
      renderAgentItem(data.agent.clientId);
      if (state.agent === data.agent.clientId) renderAgentDetail();
    } else if (data.type === "thing") {
      const previous = state.things.get(data.thing.thing);
      state.things.set(data.thing.thing, { ...data.thing, events: previous ? previous.events : [],
        history: previous ? previous.history : {} });
      renderListItem(data.thing.thing);
      renderCounts();
      if (!state.selected && !state.agent) select(data.thing.thing);
      else if (state.selected === data.thing.thing) renderDetail();
    } else if (data.type === "event") {
      const thing = state.things.get(data.thing);
      if (!thing) return;
      thing.events.push(data.event);
      if (thing.events.length > 200) thing.events.shift();
      if (state.selected === data.thing) prependEvent(data.event);
    } else if (data.type === "points") {
      const thing = state.things.get(data.thing);
      if (!thing) return;
      syncClock(data.now);
      for (const point of data.points) addPoint(thing, point);
      if (state.selected === data.thing) {
        for (const point of data.points) renderChart(thing, point.shadow, point.key);
      }
    }
  };
}

function initialSelection() {
  const agent = decodeURIComponent(location.hash.startsWith("#agent=") ? location.hash.slice(7) : "");
  if (agent) { selectAgent(agent); return state.selected; }
  const wanted = decodeURIComponent(location.hash.replace(/^#thing=/, ""));
  if (wanted && state.things.has(wanted)) return wanted;
  const names = [...state.things.keys()].sort();
  return names.find((n) => state.things.get(n).status === "online") || names[0] || null;
}

// --- the list of things -------------------------------------------------------------------------

function renderCounts() {
  const counts = { online: 0, offline: 0, unknown: 0 };
  for (const thing of state.things.values()) counts[thing.status] = (counts[thing.status] || 0) + 1;
  $("counts").textContent =
    `${plural(state.things.size, "thing")} · ${counts.online} online · ${counts.offline} offline` +
    (counts.unknown ? ` · ${counts.unknown} unknown` : "");
}

function renderList() {
  const list = $("things");
  list.replaceChildren();
  for (const name of [...state.things.keys()].sort()) renderListItem(name);
  renderCounts();
}

function renderListItem(name) {
  const thing = state.things.get(name);
  const list = $("things");
  let item = list.querySelector(`li[data-thing="${CSS.escape(name)}"]`);
  if (!item) {
    const button = el("button", { type: "button" }, el("span", { class: "dot" }),
      el("span", { class: "name", text: name }), el("span", { class: "meta" }));
    button.addEventListener("click", () => select(name));
    item = el("li", { "data-thing": name }, button);
    const after = [...list.children].find((li) => li.dataset.thing > name);
    list.insertBefore(item, after || null);
  }
  item.dataset.status = thing.status;
  item.classList.toggle("selected", name === state.selected);
  const classic = thing.shadows[""];
  item.querySelector(".meta").textContent = classic ? `v${classic.version}` : thing.thinx ? "THiNX" : "";
  item.title = `${name}: ${thing.status}`;
  applyFilter(item);
}

function applyFilter(item) {
  const text = $("filter").value.trim().toLowerCase();
  item.hidden = Boolean(text) && !item.dataset.thing.toLowerCase().includes(text);
}

function select(name) {
  if (state.agent && !name) return;
  state.selected = name;
  state.agent = null;
  for (const item of $("agents").children) item.classList.remove("selected");
  if (name) history.replaceState(null, "", `#thing=${encodeURIComponent(name)}`);
  for (const item of $("things").children) item.classList.toggle("selected", item.dataset.thing === name);
  $("detail").replaceChildren();
  if (!name) {
    $("detail").append(el("p", { class: "empty", text: "No things yet." }));
    return;
  }
  renderDetail();
}

// --- the selected thing -------------------------------------------------------------------------

function renderDetail() {
  const thing = state.things.get(state.selected);
  if (!thing) return;
  const detail = $("detail");
  let section = detail.querySelector("section.thing");
  if (!section || section.dataset.thing !== thing.thing) {
    detail.replaceChildren();
    section = el("section", { class: "thing", "data-thing": thing.thing },
      el("h2", {}, el("span", { text: thing.thing }), el("span", { class: "badge", id: "thing-status" })),
      el("div", { class: "panel", id: "ota" }, el("h3", { text: "Check-in / OTA" }), el("dl", { class: "facts" })),
      el("div", { class: "panel", id: "thinx", hidden: "" }, el("h3", { text: "THiNX" }), el("dl", { class: "facts" })),
      el("div", { id: "shadows" }),
      el("div", { class: "panel" }, el("h3", { text: "Events" }), el("ol", { id: "events" })));
    detail.append(section);
    for (const event of thing.events) prependEvent(event);
  }
  const badge = $("thing-status");
  badge.dataset.status = thing.status;
  badge.textContent = thing.status;
  renderOta(thing);
  renderThinx(thing);
  const shadows = $("shadows");
  const names = Object.keys(thing.shadows).sort();
  for (const panel of [...shadows.children]) if (!(panel.dataset.shadow in thing.shadows)) panel.remove();
  if (!names.length) {
    if (!shadows.querySelector(".empty")) shadows.append(el("p", { class: "empty", text: "No shadow yet." }));
  } else {
    shadows.querySelector(".empty")?.remove();
  }
  for (const name of names) renderShadow(thing, name, thing.shadows[name]);
}

function renderOta(thing) {
  const facts = [];
  const gateway = (thing.shadows[""] && thing.shadows[""].reported.gateway) || {};
  if (gateway.version !== undefined) facts.push(["gateway version", gateway.version]);
  if (gateway.ota !== undefined) facts.push(["OTA", otaText(gateway.ota)]);
  const checkin = thing.checkin;
  if (checkin) {
    facts.push(["last check-in", `${clock(checkin.at)} · product ${checkin.productId}` +
      ` · version ${checkin.version}${checkin.test ? " · test" : ""}`]);
    const offer = checkin.offer || {};
    facts.push(["offered", offer.version ? `${offer.version} (${offer.url})` : "nothing (up to date)"]);
  } else {
    facts.push(["last check-in", "none yet"]);
  }
  if (thing.certificates) facts.push(["certificates", `${plural(thing.certificates, "certificate")} issued`]);
  const list = $("ota").querySelector("dl");
  list.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

// A THiNX status with its console's marks: "#e" an error, "#w" a warning.
function thinxStatus(text) {
  const node = el("dd", { class: "thinx-status" });
  for (const part of String(text ?? "").split(/(#e|#w)/)) {
    if (part === "#e") node.append(el("span", { class: "mark error", text: "error" }));
    else if (part === "#w") node.append(el("span", { class: "mark warning", text: "warning" }));
    else if (part) node.append(part);
  }
  return node;
}

function renderThinx(thing) {
  const panel = $("thinx");
  const thinx = thing.thinx;
  panel.hidden = !thinx;
  if (!thinx) return;
  const facts = [
    ["udid", thinx.udid],
    ["last check-in", thinx.last_checkin ? clock(thinx.last_checkin) : "none yet"],
    ["version", `${thinx.version} (${thinx.firmware}, ${thinx.platform})`],
    ["auto update", thinx.auto_update ? "on" : "off"],
  ];
  const list = panel.querySelector("dl");
  list.replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]),
    el("dt", { text: "status" }), thinxStatus(thinx.status));
}

function renderShadow(thing, name, doc) {
  const shadows = $("shadows");
  let panel = [...shadows.children].find((p) => p.dataset.shadow === name);
  if (!panel) {
    panel = el("div", { class: "panel shadow", "data-shadow": name },
      el("h3", {}, el("span", { text: name ? `Named shadow "${name}"` : "Classic shadow" }), " ", el("small")),
      el("table", {}, el("thead", {}, el("tr", {}, ...["resource", "control", "desired", "reported", "delta", "last hour"]
        .map((h) => el("th", { text: h })))), el("tbody")));
    shadows.append(panel);
  }
  panel.querySelector("h3 small").textContent = `version ${doc.version}`;
  const errors = (doc.reported.gateway && doc.reported.gateway.errors) || {};
  const keys = [...new Set([...Object.keys(doc.desired), ...Object.keys(doc.reported),
    ...Object.keys(thing.controls)])].filter((k) => k !== "gateway").sort();
  const body = panel.querySelector("tbody");
  for (const row of [...body.children]) if (!keys.includes(row.dataset.key)) row.remove();
  keys.forEach((key, index) => {
    let row = body.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (!row) {
      row = el("tr", { "data-key": key }, el("td", { class: "key", text: key }), el("td", { class: "control" }),
        el("td", { class: "value desired" }), el("td", { class: "value reported" }), el("td", { class: "value delta" }),
        el("td", { class: "chart" }));
    }
    if (body.children[index] !== row) body.insertBefore(row, body.children[index] || null);
    const desired = doc.desired[key];
    const reported = doc.reported[key];
    row.querySelector(".desired").textContent = json(desired);
    row.querySelector(".reported").textContent = json(reported);
    row.querySelector(".delta").textContent = json(doc.delta[key]);
    row.classList.toggle("pending", key in doc.delta);
    renderControl(thing, name, key, row.querySelector(".control"), desired, reported, errors[key]);
    renderChart(thing, name, key);
  });
}

// --- OTA state in words -------------------------------------------------------------------------

// reported.gateway.ota is {state, version, error}: "applied 0.2.0", "failed 0.2.0: checksum ...".
function otaText(ota) {
  if (!ota || typeof ota !== "object" || Array.isArray(ota)) return json(ota);
  const words = String(ota.state ?? "unknown").replaceAll("_", " ");
  const version = ota.version ? ` ${ota.version}` : "";
  const error = ota.error ? `: ${ota.error}` : "";
  return `${words}${version}${error}`;
}

// --- charts of the last hour, drawn as inline SVG -----------------------------------------------
// The dev cloud sends each thing's points of the last hour with the snapshot, then new points
// ("points" messages) as values change: reported values as a step line with a dot per change,
// desired values as marks. On/off values are drawn as 1/0.

const WINDOW_S = 3600;
const MIN_SPAN_S = 60; // a young history is drawn over what it covers, at least a minute
const MAX_POINTS = 500;
const SVG = "http://www.w3.org/2000/svg";
const CHART = { width: 160, height: 30, pad: 3 };

// Times are the dev cloud's: the browser's clock may differ, so charts use the offset between them.
function syncClock(serverNow) {
  if (typeof serverNow === "number") state.offset = serverNow - Date.now() / 1000;
}
const serverNow = () => Date.now() / 1000 + state.offset;

function addPoint(thing, point) {
  thing.history = thing.history || {};
  const shadow = (thing.history[point.shadow] = thing.history[point.shadow] || {});
  const series = (shadow[point.key] = shadow[point.key] || {});
  const points = (series[point.kind] = series[point.kind] || []);
  points.push([point.at, point.value]);
  if (points.length > MAX_POINTS) points.shift();
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function renderChart(thing, shadow, key) {
  const panel = [...$("shadows")?.children || []].find((p) => p.dataset.shadow === shadow);
  const cell = panel?.querySelector(`tr[data-key="${CSS.escape(key)}"] td.chart`);
  if (!cell) return;
  const series = ((thing.history || {})[shadow] || {})[key] || {};
  const now = serverNow();
  const hourAgo = now - WINDOW_S;
  // The newest reported point before the hour is the value the line starts with.
  const reported = (series.reported || []).filter((p, i, all) => p[0] >= hourAgo || (all[i + 1] || [Infinity])[0] > hourAgo);
  const desired = (series.desired || []).filter((p) => p[0] >= hourAgo);
  if (!reported.length && !desired.length) {
    cell.replaceChildren();
    return;
  }
  // The last hour, or less while the dev cloud has seen less: changes of the first minutes
  // are spread out instead of squeezed into the right edge.
  const earliest = Math.min(...[...reported, ...desired].map((p) => p[0]));
  const span = Math.min(WINDOW_S, Math.max(MIN_SPAN_S, now - earliest));
  const start = now - span;
  const values = [...reported, ...desired].map((p) => p[1]);
  let low = Math.min(...values);
  let high = Math.max(...values);
  const hint = thing.controls[key];
  if (hint && typeof hint.low === "number" && typeof hint.high === "number") {
    low = Math.min(low, hint.low);
    high = Math.max(high, hint.high);
  }
  if (high === low) { low -= 0.5; high += 0.5; }
  const { width, height, pad } = CHART;
  const x = (t) => (pad + (Math.max(t, start) - start) / span * (width - 2 * pad)).toFixed(1);
  const y = (v) => (height - pad - (v - low) / (high - low) * (height - 2 * pad)).toFixed(1);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  const visible = reported.filter((p) => p[0] >= hourAgo);
  chart.dataset.points = String(visible.length);
  chart.dataset.marks = String(desired.length);
  const minutes = Math.round(span / 60);
  chart.dataset.span = String(Math.round(span));
  chart.setAttribute("aria-label", `${key}, last ${minutes === 60 ? "hour" : plural(minutes, "minute")}: ${plural(visible.length, "change")}` +
    `, ${plural(desired.length, "desired change")}, from ${+low.toFixed(3)} to ${+high.toFixed(3)}`);
  if (reported.length) {
    let path = `M${x(reported[0][0])},${y(reported[0][1])}`;
    for (const [t, v] of reported.slice(1)) path += `H${x(t)}V${y(v)}`;
    path += `H${x(now)}`;
    chart.append(svg("path", { class: "line", d: path }));
    for (const [t, v] of visible) chart.append(svg("circle", { class: "point", cx: x(t), cy: y(v), r: 1.6 }));
  }
  for (const [t, v] of desired) {
    const cx = Number(x(t));
    const cy = Number(y(v));
    chart.append(svg("path", { class: "desired-mark", d: `M${cx},${cy - 3}L${cx + 3},${cy}L${cx},${cy + 3}L${cx - 3},${cy}Z` }));
  }
  cell.replaceChildren(chart);
}

// Time moves on: slide the charts of the selected thing even when nothing changes.
setInterval(() => {
  const thing = state.things.get(state.selected);
  if (!thing) return;
  for (const shadow of Object.keys(thing.shadows)) {
    for (const key of Object.keys((thing.history || {})[shadow] || {})) renderChart(thing, shadow, key);
  }
}, 15000);

// --- controls, from control hints (the dev cloud's own things) or from the values' types --------

function controlSpec(thing, key, desired, reported, error) {
  const hint = thing.controls[key];
  if (hint) {
    if (!hint.writable) return { kind: "readonly" };
    if (hint.kind === "switch") return { kind: "toggle" };
    if (hint.kind === "rgb") return { kind: "colour" };
    return { kind: "slider", low: hint.low, high: hint.high };
  }
  if (error && error.includes("read-only")) return { kind: "readonly" };
  const values = [desired, reported].filter((v) => v !== undefined && v !== null);
  if (!values.length) return { kind: "text" };
  if (values.every((v) => typeof v === "boolean")) return { kind: "toggle" };
  if (values.every((v) => typeof v === "number")) {
    const memo = `${thing.thing}/${key}`;
    if (values.some((v) => v < 0)) state.signed.add(memo);
    if (values.every((v) => v >= -1 && v <= 1)) {
      return state.signed.has(memo) ? { kind: "slider", low: -1, high: 1 } : { kind: "slider", low: 0, high: 1 };
    }
    return { kind: "number" };
  }
  if (values.every((v) => Array.isArray(v) && v.length === 3 && v.every((c) => typeof c === "number" && c >= 0 && c <= 1))) {
    return { kind: "colour" };
  }
  return { kind: "text" };
}

// `raw` is JSON text the user typed, already checked with JSON.parse: it is sent as typed, so
// the server applies the shadow's own bounds to it (a 401-digit number stays that number, where
// JSON.parse would have turned it into Infinity and JSON.stringify into null, deleting the key).
function send(thing, shadow, key, value, raw) {
  const desired = raw === undefined ? JSON.stringify({ [key]: value }) : `{${JSON.stringify(key)}:${raw}}`;
  fetch(`/api/things/${encodeURIComponent(thing)}/desired`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Dashboard-Token": TOKEN },
    body: `{"shadow":${JSON.stringify(shadow || null)},"desired":${desired}}`,
  }).then(async (response) => {
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      toast(`${thing}: setting ${key} failed: ${body.error || response.status}`);
    }
  }, (error) => toast(`${thing}: setting ${key} failed: ${error}`));
}

const toHex = (rgb) => "#" + rgb.map((c) => Math.round(c * 255).toString(16).padStart(2, "0")).join("");

function renderControl(thing, shadow, key, cell, desired, reported, error) {
  const spec = controlSpec(thing, key, desired, reported, error);
  const signature = JSON.stringify(spec);
  const current = desired !== undefined && desired !== null ? desired : reported;
  if (cell.dataset.spec !== signature) {
    cell.dataset.spec = signature;
    cell.replaceChildren(buildControl(thing.thing, shadow, key, spec), el("div", { class: "error" }));
  }
  cell.querySelector(".error").textContent = error || "";
  const input = cell.querySelector("input");
  if (!input || input.dataset.busy === "1") return;
  if (spec.kind === "toggle") input.checked = current === true;
  else if (spec.kind === "slider" && typeof current === "number") {
    input.value = String(current);
    cell.querySelector(".readout").textContent = current.toFixed(2);
  } else if (spec.kind === "colour" && Array.isArray(current)) input.value = toHex(current);
  else if (spec.kind === "number" && document.activeElement !== input && current !== undefined) input.value = String(current);
  else if (spec.kind === "text" && document.activeElement !== input) input.value = json(current);
}

function buildControl(thing, shadow, key, spec) {
  const label = `${key} of ${thing}`;
  if (spec.kind === "readonly") return el("span", { class: "readonly", text: "read-only" });
  if (spec.kind === "toggle") {
    const input = el("input", { type: "checkbox", role: "switch", "aria-label": label });
    input.addEventListener("change", () => send(thing, shadow, key, input.checked));
    return el("label", { class: "switch" }, input, el("span", { class: "track" }));
  }
  if (spec.kind === "slider") {
    const step = spec.high - spec.low > 10 ? "1" : "0.01";
    const input = el("input", { type: "range", min: String(spec.low), max: String(spec.high), step, "aria-label": label });
    const readout = el("span", { class: "readout" });
    input.addEventListener("pointerdown", () => { input.dataset.busy = "1"; });
    input.addEventListener("pointerup", () => { input.dataset.busy = "0"; });
    input.addEventListener("input", () => { readout.textContent = Number(input.value).toFixed(2); });
    input.addEventListener("change", () => { input.dataset.busy = "0"; send(thing, shadow, key, Number(input.value)); });
    return el("span", {}, input, readout);
  }
  if (spec.kind === "colour") {
    const input = el("input", { type: "color", "aria-label": label });
    input.addEventListener("change", () => send(thing, shadow, key, input.value));
    return input;
  }
  const input = el("input", { type: spec.kind === "number" ? "number" : "text", "aria-label": label,
    step: "any", placeholder: spec.kind === "number" ? "number" : "JSON value" });
  input.addEventListener("change", () => {
    if (spec.kind === "number") {
      if (input.value === "") return;
      const number = Number(input.value);
      // Infinity would be sent as null, which deletes the key: refuse it here, visibly.
      if (!Number.isFinite(number)) toast(`${thing}: ${key} not set: ${input.value} is out of range`);
      else send(thing, shadow, key, number);
      return;
    }
    const text = input.value.trim();
    let isJson = true;
    try { JSON.parse(text); } catch { isJson = false; }
    if (isJson) send(thing, shadow, key, undefined, text);
    else send(thing, shadow, key, input.value);
  });
  return input;
}

function prependEvent(event) {
  const list = $("events");
  if (!list) return;
  list.prepend(el("li", { "data-kind": event.kind }, el("time", { text: clock(event.at) }), event.text));
  while (list.children.length > 200) list.lastChild.remove();
}

// --- MindConnect agents ---------------------------------------------------------------------------
// The dev cloud's MindConnect side: agents (client id <tenant>_<name>) with their latest time
// series values, events, and commands with the agents' answers.

const DEFAULT_COMMAND = { commandType: "set", device: "", value: "" };

async function loadAgents() {
  try {
    const response = await fetch("/api/mindconnect");
    if (!response.ok) return;
    const summary = await response.json();
    $("mc-tenant").textContent = `tenant ${summary.tenant}`;
    state.agents = new Map(summary.agents.map((a) => [a.clientId, a]));
    $("agents").replaceChildren();
    for (const clientId of [...state.agents.keys()].sort()) renderAgentItem(clientId);
    if (!state.agents.size) $("agents").append(el("li", { class: "empty", text: "No agents yet." }));
    if (state.agent) renderAgentDetail();
  } catch (error) {
    toast(`MindConnect: ${error}`);
  }
}

function renderAgentItem(clientId) {
  const agent = state.agents.get(clientId);
  const list = $("agents");
  list.querySelector(".empty")?.remove();
  let item = list.querySelector(`li[data-agent="${CSS.escape(clientId)}"]`);
  if (!item) {
    const button = el("button", { type: "button" }, el("span", { class: "name", text: clientId }), el("span", { class: "meta" }));
    button.addEventListener("click", () => selectAgent(clientId));
    item = el("li", { "data-agent": clientId }, button);
    const after = [...list.children].find((li) => li.dataset.agent > clientId);
    list.insertBefore(item, after || null);
  }
  item.classList.toggle("selected", clientId === state.agent);
  item.querySelector(".meta").textContent = plural(agent.messages, "message");
}

function selectAgent(clientId) {
  state.agent = clientId;
  state.selected = null;
  history.replaceState(null, "", `#agent=${encodeURIComponent(clientId)}`);
  for (const item of $("things").children) item.classList.remove("selected");
  for (const item of $("agents").children) item.classList.toggle("selected", item.dataset.agent === clientId);
  $("detail").replaceChildren();
  renderAgentDetail();
}

function renderAgentDetail() {
  const agent = state.agents.get(state.agent) || { clientId: state.agent, messages: 0, latest: {}, events: [],
    commands: [], answers: [], refusals: [] };
  const detail = $("detail");
  let section = detail.querySelector("section.agent");
  if (!section || section.dataset.agent !== agent.clientId) {
    detail.replaceChildren();
    const payload = el("textarea", { id: "mc-payload", rows: "3", "aria-label": `command payload for ${agent.clientId}` });
    payload.value = JSON.stringify(DEFAULT_COMMAND);
    const sendButton = el("button", { type: "button", id: "mc-send", text: "Send command" });
    sendButton.addEventListener("click", () => sendCommand(agent.clientId, payload.value));
    section = el("section", { class: "agent", "data-agent": agent.clientId },
      el("h2", {}, el("span", { text: agent.clientId }), el("span", { class: "badge", text: "MindConnect agent" })),
      el("div", { class: "panel" }, el("h3", { text: "Latest values" }),
        el("table", { id: "mc-latest" }, el("thead", {}, el("tr", {}, ...["data point", "value", "quality", "observed"]
          .map((h) => el("th", { text: h })))), el("tbody"))),
      el("div", { class: "panel" }, el("h3", { text: "Command" }),
        el("p", { class: "hint", text: "Payload (JSON object), sent as {id, data: {jobId, payload}} on i/cmd_v3/c" }),
        payload, el("div", {}, sendButton), el("ol", { id: "mc-commands" })),
      el("div", { class: "panel" }, el("h3", { text: "Events" }), el("ol", { id: "mc-events" })),
      el("div", { class: "panel" }, el("h3", { text: "Refused messages" }), el("ol", { id: "mc-refusals" })));
    detail.append(section);
  }
  const rows = Object.values(agent.latest).map((p) => el("tr", { "data-point": p.dataPointId },
    el("td", { class: "key", text: p.dataPointId }), el("td", { class: "value", text: p.value }),
    el("td", { text: p.qualityCode }), el("td", { class: "value", text: p.timestamp })));
  $("mc-latest").querySelector("tbody").replaceChildren(...rows);
  if (!rows.length) $("mc-latest").querySelector("tbody").append(el("tr", {}, el("td", { class: "empty", text: "No values yet." })));
  const answers = new Map(agent.answers.map((a) => [a.requestId, a]));
  $("mc-commands").replaceChildren(...[...agent.commands].reverse().map((c) => {
    const answer = answers.get(c.id);
    const status = answer ? answer.data.status : "sent";
    const message = answer && answer.data.response && answer.data.response.message ? `: ${answer.data.response.message}` : "";
    return el("li", { "data-command": c.id, "data-status": status }, el("time", { text: clock(c.sentAt) }),
      `${JSON.stringify(c.payload)} → ${status}${message}`);
  }));
  $("mc-events").replaceChildren(...[...agent.events].reverse().map((e) => el("li", {},
    el("time", { text: clock(e.receivedAt) }), `${e.type || ""} ${e.description || ""} (${e.timestamp})`)));
  $("mc-refusals").replaceChildren(...[...agent.refusals].reverse().map((r) => el("li", { "data-kind": "error" },
    el("time", { text: clock(r.receivedAt) }), `${r.topic}: ${r.reason}`)));
}

function sendCommand(clientId, text) {
  let payload;
  try { payload = JSON.parse(text); } catch { toast(`${clientId}: the payload is not JSON`); return; }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) {
    toast(`${clientId}: the payload must be a JSON object`);
    return;
  }
  fetch(`/api/mindconnect/agents/${encodeURIComponent(clientId)}/commands`, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Dashboard-Token": TOKEN },
    body: JSON.stringify({ payload }),
  }).then(async (response) => {
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      toast(`${clientId}: command not sent: ${body.error || response.status}`);
    }
  }, (error) => toast(`${clientId}: command not sent: ${error}`));
}

$("filter").addEventListener("input", () => { for (const item of $("things").children) applyFilter(item); });
connect();
