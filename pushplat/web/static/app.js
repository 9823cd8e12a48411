// The demo page: one PushClient from the browser SDK bundle (sdk/pushplat.js, built by
// scripts/build-web). Query parameters fill the form: ?user=&device=&token=&edges=&autoconnect=1.
// window.demo mirrors what the page shows, for the browser tests (tests/browser).
import { PushClient, priorityName } from "./sdk/pushplat.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const defaultEdge = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/connect`;
const demo = (window.demo = { state: "idle", connects: 0, messages: [], events: [], goAways: [], error: null });
let client = null;
let poll = null;

for (const name of ["user", "device", "token"]) if (params.has(name)) $(name).value = params.get(name);
$("edges").value = params.get("edges") || defaultEdge;

function event(text, kind = "") {
  demo.events.push(text);
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (kind) item.className = kind;
  $("events").prepend(item);
}

function setState(state, detail = "") {
  demo.state = state;
  $("state").textContent = state;
  $("state").dataset.state = state;
  $("detail").textContent = detail;
}

// The SDK reports its connection events through a logger; the page shows them.
const logger = {
  info(line) {
    if (line.startsWith("go_away")) {
      demo.goAways.push(line);
      event(line, "goaway");
    } else if (line.startsWith("connected") || line.startsWith("reconnecting")) {
      event(line);
    }
  },
  warn(line) {
    event(line, "error");
  },
  error(line) {
    event(line, "error");
  },
};

function show(message) {
  const latency = Date.now() - Number(message.createdAtMs);
  const payload = new TextDecoder().decode(message.payload);
  const priority = priorityName(message.priority);
  demo.messages.push({ id: message.messageId, payload, priority, latencyMs: latency });
  const row = document.createElement("tr");
  row.dataset.messageId = message.messageId;
  for (const [text, cls] of [
    [new Date().toLocaleTimeString(), ""],
    [message.messageId, "id"],
    [priority, `priority-${priority}`],
    [`${latency} ms`, ""],
    [payload, "payload"],
    ["sent", "ack"],
  ]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    if (cls) cell.className = cls;
    row.append(cell);
  }
  $("messages").tBodies[0].prepend(row);
  $("count").textContent = String(demo.messages.length);
}

async function connect() {
  if (client) return;
  const edges = $("edges").value.split(",").map((u) => u.trim()).filter(Boolean);
  const token = $("token").value.trim();
  const options = token ? { token, logger } : { userId: $("user").value.trim(), deviceId: $("device").value.trim(), logger };
  try {
    client = new PushClient(edges, options);
  } catch (err) {
    setState("stopped", String(err.message || err));
    return;
  }
  $("connect").disabled = true;
  $("disconnect").disabled = false;
  $("send-hint").textContent = token ? 'pushplat send --user <the token\'s user> "hello"' : `pushplat send --user ${options.userId} "hello"`;
  setState("connecting", edges.join(", "));
  const mine = client;
  poll = setInterval(() => {
    if (mine.closed) return;
    if (mine.connected) {
      demo.connects = mine.connects;
      demo.edgeId = mine.edgeId;
      setState("connected", `edge ${mine.edgeId}, session ${mine.sessionId}, connects ${mine.connects}`);
    } else if (demo.state === "connected") {
      setState("reconnecting", "");
    }
  }, 100);
  mine.start();
  try {
    // autoAck (the default): each message is acked as the loop takes it.
    for await (const message of mine) show(message);
    if (!mine.closed) setState("stopped", "the connection ended");
  } catch (err) {
    demo.error = { code: err.code, details: err.details ?? String(err) };
    setState("stopped", `${err.message || err}`);
    event(`stopped: ${err.message || err}`, "error");
  } finally {
    clearInterval(poll);
    if (client === mine) {
      client = null;
      $("connect").disabled = false;
      $("disconnect").disabled = true;
    }
  }
}

async function disconnect() {
  const mine = client;
  if (!mine) return;
  client = null;
  clearInterval(poll);
  await mine.close();
  setState("idle", "disconnected");
  $("connect").disabled = false;
  $("disconnect").disabled = true;
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});
$("disconnect").addEventListener("click", () => disconnect());
if (params.get("autoconnect") === "1") connect();
