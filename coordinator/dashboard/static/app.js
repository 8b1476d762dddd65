// The shardkv dashboard. Everything it shows comes from this coordinator: the event feed
// (/v1/events, with node.stats samples), the map (/v1/map) and the key browser (/ui/api/).
// Keys and values are untrusted data: they go into the page as text (textContent), never
// as markup. The admin token lives in sessionStorage and travels in an Authorization
// header or as the first WebSocket frame, never in a URL.
"use strict";

const TOKEN_KEY = "shardkv.token";
const HISTORY_POINTS = 60;
const FEED_LIMIT = 200;
const state = { map: null, stats: {}, history: {}, feed: null, watch: null, reconnect: 500 };

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const wsUrl = (path) => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function shown(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object" && "b64" in value) return "base64:" + value.b64;
  return String(value);
}

function clock(seconds) {
  const d = seconds ? new Date(seconds * 1000) : new Date();
  return d.toLocaleTimeString([], { hour12: false });
}

// -- login --------------------------------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

function loggedOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  closeFeed();
  stopWatch();
  showLogin("");
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  $("login").hidden = true;
  drawChart($("chart-ops"), [], "ops/s");
drawChart($("chart-p99"), [], "ms");
openFeed();
});
$("logout").addEventListener("click", loggedOut);

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = "Bearer " + token();
  const response = await fetch(path, { headers, cache: "no-store", referrerPolicy: "no-referrer" });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    loggedOut();
    throw new Error("log in first");
  }
  if (!response.ok) throw new Error(body.message || body.error || response.statusText);
  return body;
}

// -- the event feed -----------------------------------------------------------------------

function closeFeed() {
  if (state.feed) {
    state.feed.onclose = null;
    state.feed.close();
    state.feed = null;
  }
  setConnected(false);
}

function setConnected(on) {
  $("conn").textContent = on ? "live" : "disconnected";
  $("conn").className = "pill " + (on ? "pill-on" : "pill-off");
}

function openFeed() {
  closeFeed();
  const ws = new WebSocket(wsUrl("/v1/events?since=0&stats=1"));
  state.feed = ws;
  ws.onopen = () => ws.send(JSON.stringify({ token: token() }));
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "error") {
      if (event.error === "UNAUTHORIZED") {
        ws.onclose = null;
        const tried = token();
        sessionStorage.removeItem(TOKEN_KEY);
        showLogin(tried ? "Wrong token." : "");
        setConnected(false);
      }
      return;
    }
    setConnected(true);
    state.reconnect = 500;
    $("logout").hidden = !token();
    onEvent(event);
  };
  ws.onclose = () => {
    setConnected(false);
    state.feed = null;
    setTimeout(openFeed, state.reconnect);
    state.reconnect = Math.min(state.reconnect * 2, 5000);
  };
}

let mapRefresh = null;
function refreshMapSoon() {
  if (mapRefresh) return;
  mapRefresh = setTimeout(async () => {
    mapRefresh = null;
    try {
      setMap(await api("/v1/map"));
    } catch (error) { /* the next event retries */ }
  }, 100);
}

function onEvent(event) {
  if (event.type === "cluster.snapshot") {
    $("coord").textContent = event.coordinator;
    setMap(event.map);
    return;
  }
  if (event.type === "node.stats") {
    onStats(event);
    return;
  }
  addFeedItem($("events"), event.time, event.type, describe(event));
  if (event.map_version && (!state.map || event.map_version > state.map.version)) {
    refreshMapSoon();
  }
}

function describe(e) {
  switch (e.type) {
    case "shard.primary":
      return e.new_primary ? `${e.shard}: ${e.new_primary} is primary, epoch ${e.epoch}`
        : `${e.shard}: no primary (was ${e.old_primary})`;
    case "shard.failover":
      return `${e.shard}: primary ${e.old_primary || "none"} → ${e.new_primary || "none"}, epoch ${e.epoch}`;
    case "node.up": case "node.down": case "node.status":
      return `${e.node} (${e.shard || "no shard"}) is ${e.status}, was ${e.before}`;
    case "node.liveness":
      return `${e.node} (${e.shard || "no shard"}) is ${e.liveness}, was ${e.before}`;
    case "node.added": return `${e.node} at ${e.url} (${e.shard || "spare"}, ${e.role})`;
    case "node.removed": return `${e.node} left ${e.shard || "the cluster"}`;
    case "shard.members":
      return `${e.shard}: members ${e.members.join(", ")}` +
        (e.added.length ? ` (+${e.added.join(", ")})` : "") +
        (e.removed.length ? ` (−${e.removed.join(", ")})` : "");
    case "shard.added":
      return `${e.shard} (${e.state})` + (e.members.length ? ` with ${e.members.join(", ")}` : "");
    case "shard.removed": return `${e.shard}`;
    case "shard.state": return `${e.shard}: ${e.before} → ${e.state}`;
    case "ring.changed":
      return `ring v${e.before} → v${e.ring_version}: ${Object.keys(e.shards).join(", ")}`;
    case "migration.started": case "migration.progress": case "migration.state":
      return `${e.migration} (${e.kind} ${e.shard}): ${e.state}, ${e.keys_moved}` +
        (e.keys_total ? `/${e.keys_total}` : "") + " keys moved";
    case "coordinator.added": return `${e.coordinator} at ${e.url}`;
    case "coordinator.removed": return `${e.coordinator}`;
    default: return JSON.stringify(e);
  }
}

function addFeedItem(list, time, type, text) {
  const item = el("li");
  const kind = type.split(".")[0];
  item.append(el("span", clock(time), "time"), el("span", type, "type t-" + kind),
    el("span", text, "text"));
  list.prepend(item);
  while (list.children.length > FEED_LIMIT) list.lastChild.remove();
}

// -- the map: shards table and migration ------------------------------------------------

function setMap(map) {
  if (state.map && map.version < state.map.version) return;
  state.map = map;
  $("leader").textContent = map.leader || "none";
  $("map-version").textContent = map.version;
  $("ring-version").textContent = map.ring ? map.ring.version : "?";
  renderShards();
  renderMigration();
}

function health(node, stats) {
  if (node.status === "down") return ["down", "health-bad"];
  if (!stats) return ["…", "health-warn"];
  if (stats.state === "unreachable") return ["unreachable", "health-bad"];
  if (stats.state !== "ready") return [stats.state || "?", "health-warn"];
  if (stats.role && stats.role !== node.role) return [`${stats.role}?`, "health-warn"];
  if (stats.lag !== null && stats.lag > 1000) return ["lagging", "health-warn"];
  return ["ok", "health-ok"];
}

function renderShards() {
  const map = state.map;
  if (!map) return;
  const body = $("shards").tBodies[0];
  const rows = [];
  for (const shardId of Object.keys(map.shards).sort()) {
    const shard = map.shards[shardId];
    const weight = map.ring && map.ring.shards[shardId];
    const members = [...shard.members].sort((a, b) =>
      (a === shard.primary ? -1 : b === shard.primary ? 1 : a.localeCompare(b)));
    members.forEach((nodeId, index) => {
      const node = map.nodes[nodeId] || { status: "?", role: "?" };
      const stats = state.stats[nodeId];
      const row = el("tr", null, index === 0 ? "shard-first" : "");
      row.dataset.shard = shardId;
      row.dataset.node = nodeId;
      const cells = index === 0
        ? [el("td", shardId), el("td", shard.state), el("td", shard.epoch, "num"),
          el("td", weight === undefined ? "—" : (weight.weight ?? weight), "num")]
        : [el("td"), el("td"), el("td"), el("td")];
      const role = nodeId === shard.primary ? "primary" : "replica";
      const roleCell = el("td");
      roleCell.append(el("span", role, "role role-" + role));
      const [text, cls] = health(node, stats);
      row.append(...cells, el("td", nodeId), roleCell, el("td", text, cls),
        el("td", stats ? shown(stats.last_lsn) : "", "num"),
        el("td", stats ? shown(stats.lag) : "", "num"),
        el("td", stats ? shown(stats.keys) : "", "num"),
        el("td", stats ? shown(stats.ops_s) : "", "num"),
        el("td", stats ? shown(stats.p99_ms) : "", "num"));
      rows.push(row);
    });
  }
  body.replaceChildren(...rows);
}

function renderMigration() {
  const map = state.map;
  const box = $("migration");
  const running = map.migration;
  if (!running) {
    box.replaceChildren(el("p", "No migration running.", "muted"));
  } else {
    const bar = el("div", null, "progress");
    const fill = el("div");
    const total = running.keys_total || 0;
    fill.style.width = total ? Math.min(100, (100 * running.keys_moved) / total) + "%" : "0";
    bar.append(fill);
    box.replaceChildren(
      el("p", `${running.id}: ${running.kind} ${running.target} from ` +
        `${running.sources.join(", ")} — ${running.state}`),
      bar,
      el("p", `${running.keys_moved}${total ? "/" + total : ""} keys, ` +
        `${running.rate_keys_s.toFixed(0)} keys/s`, "muted"));
  }
  const recent = (map.migrations || []).slice(-5).reverse();
  $("migrations").replaceChildren(...(recent.length ? recent.map((m) =>
    el("li", `${m.id}: ${m.kind} ${m.target} — ${m.state}, ${m.keys_moved} keys`))
    : [el("li", "None yet.", "muted")]));
}

// -- node.stats: table cells and charts ----------------------------------------------------

let chartRedraw = null;
function onStats(sample) {
  state.stats[sample.node] = sample;
  const history = state.history[sample.node] || (state.history[sample.node] = { ops: [], p99: [] });
  history.ops.push(sample.ops_s);
  history.p99.push(sample.p99_ms);
  for (const list of [history.ops, history.p99]) {
    while (list.length > HISTORY_POINTS) list.shift();
  }
  if (chartRedraw) return;
  chartRedraw = setTimeout(() => {
    chartRedraw = null;
    renderShards();
    const names = Object.keys(state.history).sort();
    drawChart($("chart-ops"), names.map((n) => ({ name: n, points: state.history[n].ops })), "ops/s");
    drawChart($("chart-p99"), names.map((n) => ({ name: n, points: state.history[n].p99 })), "ms");
    drawLegend($("legend-ops"), names);
    drawLegend($("legend-p99"), names);
  }, 200);
}

// -- key browser --------------------------------------------------------------------------

function showKeys(items, note) {
  $("keys").tBodies[0].replaceChildren(...items.map((item) => {
    const row = el("tr");
    row.append(el("td", shown(item.key)),
      el("td", shown(item.value) + (item.value_bytes > 4096 ? " …" : ""), "value"),
      el("td", item.version, "num"), el("td", item.shard));
    return row;
  }));
  $("keys-status").textContent = note;
}

$("scan-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const prefix = $("scan-prefix").value;
  $("keys-status").textContent = "scanning…";
  try {
    const body = await api("/ui/api/scan?limit=50&prefix=" + encodeURIComponent(prefix));
    showKeys(body.items, `${body.items.length} key(s)${body.more ? ", more not shown" : ""}`);
  } catch (error) {
    showKeys([], "scan failed: " + error.message);
  }
});

$("get-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = $("get-key").value;
  if (!key) return;
  try {
    const item = await api("/ui/api/key?key=" + encodeURIComponent(key));
    showKeys([item], `version ${item.version} on ${item.shard}`);
  } catch (error) {
    showKeys([], `${key}: ${error.message}`);
  }
});

// -- live watch of a prefix ---------------------------------------------------------------

function stopWatch() {
  if (state.watch) {
    state.watch.onclose = null;
    state.watch.close();
    state.watch = null;
  }
  $("watch-button").textContent = "Watch";
}

$("watch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (state.watch) {
    stopWatch();
    $("watch-status").textContent = "Not watching.";
    return;
  }
  const prefix = $("watch-prefix").value;
  const ws = new WebSocket(wsUrl("/ui/api/watch?prefix=" + encodeURIComponent(prefix)));
  state.watch = ws;
  $("watch-button").textContent = "Stop";
  $("watch-events").replaceChildren();
  ws.onopen = () => ws.send(JSON.stringify({ token: token() }));
  ws.onmessage = (message) => {
    const frame = JSON.parse(message.data);
    if (frame.type === "created") {
      $("watch-status").textContent = `Watching "${prefix}" on every shard.`;
    } else if (frame.type === "watch") {
      for (const e of frame.events) {
        const value = e.type === "put" ? " = " + shown(e.value) : "";
        addFeedItem($("watch-events"), null, e.type, `${shown(e.key)}${value} (v${e.version}, ${frame.shard})`);
      }
    } else if (frame.type === "error") {
      $("watch-status").textContent = "watch refused: " + frame.message;
    }
  };
  ws.onclose = () => {
    state.watch = null;
    $("watch-button").textContent = "Watch";
    $("watch-status").textContent = "Watch closed.";
  };
});

drawChart($("chart-ops"), [], "ops/s");
drawChart($("chart-p99"), [], "ms");
openFeed();
