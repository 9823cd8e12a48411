/** PushClient.subscribe/unsubscribe against a scripted in-process Edge, and the topic target. */

import { status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { MAX_TOPICS_PER_REQUEST, PushClient, PushError, makeRequest } from "../src/index";
import { FakeEdge, within } from "./fakes";

let edge: FakeEdge;
let client: PushClient;

beforeEach(async () => {
  edge = await new FakeEdge().start();
  client = new PushClient(edge.address, { userId: "u1", deviceId: "d1" });
});

afterEach(async () => {
  await client.close(0);
  await edge.stop();
});

test("subscribe sends a frame and resolves with the edge's answer", async () => {
  const answer = client.subscribe("news", "bad name");
  const conn = await edge.nextConn();
  conn.welcome();
  const frame = await conn.topicFrames.get(3000, "a Subscribe frame");
  assert.deepEqual(frame.subscribe?.topics, ["news", "bad name"]);
  const requestId = frame.subscribe?.requestId ?? "";
  assert.ok(requestId);
  conn.send({
    subscription: {
      requestId,
      applied: ["news"],
      refused: [{ topic: "bad name", code: status.INVALID_ARGUMENT, message: "topic names must match" }],
      topicCount: 1,
    },
  });
  const result = await within(answer);
  assert.deepEqual(result.applied, ["news"]);
  assert.equal(result.refused[0]?.code, status.INVALID_ARGUMENT);

  // The stream ends before the edge answers an Unsubscribe: the call fails with UNAVAILABLE.
  const pending = client.unsubscribe("news");
  const unsub = await conn.topicFrames.get(3000, "an Unsubscribe frame");
  assert.deepEqual(unsub.unsubscribe?.topics, ["news"]);
  assert.notEqual(unsub.unsubscribe?.requestId, requestId);
  conn.abort(status.UNAVAILABLE, "edge went away");
  await assert.rejects(within(pending), (err: unknown) => err instanceof PushError && err.code === status.UNAVAILABLE);
});

test("the topic count is checked before anything is sent", async () => {
  const many = Array.from({ length: MAX_TOPICS_PER_REQUEST + 1 }, (_, i) => `t${i}`);
  await assert.rejects(client.subscribe(...many), TypeError);
  await assert.rejects(client.subscribe(), TypeError);
});

test("a send to a topic sets the topic target", () => {
  const request = makeRequest({ topic: "news", payload: "x", priority: "high" });
  assert.equal(request.topic, "news");
  assert.equal(request.userId, undefined);
  assert.throws(() => makeRequest({ topic: "news", deviceId: "d" }), TypeError);
});
