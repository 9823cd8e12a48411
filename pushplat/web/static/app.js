// The demo page: one PushClient from the browser SDK bundle (sdk/pushplat.js, built by
// scripts/build-web). Query parameters fill the form: ?user=&device=&token=&edges=&autoconnect=1.
// window.demo mirrors what the page shows, for the browser tests (tests/browser).
import { PushClient, priorityName, statusName } from "./sdk/pushplat.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const defaultEdge = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/connect`;
const demo = (window.demo = {
  state: "idle",
  connects: 0,
  messages: [],
  subscriptions: [],
  events: [],
  goAways: [],
  error: null,
});
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
  // topic: the topic a Send(topic=...) went to; "" for a message to this user or device.
  demo.messages.push({ id: message.messageId, payload, priority, topic: message.topic, latencyMs: latency });
  const row = document.createElement("tr");
  row.dataset.messageId = message.messageId;
  for (const [text, cls] of [
    [new Date().toLocaleTimeString(), ""],
    [message.messageId, "id"],
    [priority, `priority-${priority}`],
    [message.topic, "topic"],
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
  setTopicButtons(true);
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
      setTopicButtons(false);
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
  setTopicButtons(false);
}

function setTopicButtons(enabled) {
  $("subscribe").disabled = !enabled;
  $("unsubscribe").disabled = !enabled;
}

// One line per answer: what was applied, and each refused topic with its status and why.
function showSubscription(entry) {
  const item = document.createElement("li");
  if (entry.error) {
    item.className = "refused";
    item.textContent = `${entry.kind} ${entry.topics.join(", ")}: failed, ${entry.error.details}`;
  } else {
    const refused = entry.refused.map((r) => `${r.topic} ${statusName(r.code)} (${r.message})`);
    item.textContent = `${entry.kind}: applied [${entry.applied.join(", ")}]; device holds ${entry.topicCount}`;
    if (refused.length) {
      const why = document.createElement("span");
      why.className = "refused";
      why.textContent = `; refused ${refused.join("; ")}`;
      item.append(why);
    }
  }
  $("subscriptions").prepend(item);
}

// The SDK waits for the connection, sends one Subscribe/Unsubscribe frame and resolves with
// the edge's SubscriptionResult: refusals are per topic, so one bad name spoils nothing else.
async function changeTopics(kind) {
  const mine = client;
  const topics = $("topics").value.split(",").map((t) => t.trim()).filter(Boolean);
  if (!mine || topics.length === 0) return;
  const entry = { kind, topics };
  try {
    const result = await mine[kind](...topics);
    entry.applied = result.applied;
    entry.refused = result.refused.map((r) => ({ topic: r.topic, code: r.code, message: r.message }));
    entry.topicCount = result.topicCount;
  } catch (err) {
    entry.error = { code: err.code, details: err.details ?? String(err.message || err) };
  }
  demo.subscriptions.push(entry);
  showSubscription(entry);
  if (!entry.error && entry.applied.length) $("topic-hint").textContent = `pushplat send --topic ${entry.applied[0]} "hello"`;
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect();
});
$("disconnect").addEventListener("click", () => disconnect());
$("topics-form").addEventListener("submit", (e) => {
  e.preventDefault();
  changeTopics("subscribe");
});
$("unsubscribe").addEventListener("click", () => changeTopics("unsubscribe"));
if (params.get("autoconnect") === "1") connect();
