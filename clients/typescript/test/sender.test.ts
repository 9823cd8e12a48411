/** PushSender against a fake Push service. */

import { status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { AuthError, DeliveryMode, Priority, PushError, PushSender, makeRequest } from "../src/index";
import { useFakePush } from "./fakes";

const fake = useFakePush();
const makeSender = fake.makeSender;

describe("PushSender", () => {
  test("send builds the request and returns the response", async () => {
    const response = await makeSender().send({
      userId: "u1",
      payload: "hi",
      contentType: "text/plain",
      priority: "high",
      ttlSeconds: 60,
      collapseKey: "score",
      idempotencyKey: "dup",
      atLeastOnce: true,
      labels: { campaign: "c1" },
    });
    assert.deepEqual(response, { messageId: "m1", duplicate: true, requestId: "", error: undefined });
    const r = fake.api().requests[0];
    assert.equal(r.userId, "u1");
    assert.equal(r.deviceId, undefined);
    assert.equal(Buffer.from(r.payload).toString(), "hi");
    assert.equal(r.contentType, "text/plain");
    assert.equal(r.priority, Priority.PRIORITY_HIGH);
    assert.equal(r.ttlSeconds, 60);
    assert.equal(r.collapseKey, "score");
    assert.equal(r.idempotencyKey, "dup");
    assert.equal(r.delivery, DeliveryMode.AT_LEAST_ONCE);
    assert.deepEqual(r.labels, { campaign: "c1" });
    assert.deepEqual(fake.api().metadata[0].get("authorization"), []);
    // A deadline travels with the call.
    assert.ok(fake.api().deadlines[0] > 0 && fake.api().deadlines[0] <= 10_000, `deadline ${fake.api().deadlines[0]}`);
  });

  test("send to a device with defaults", async () => {
    await makeSender().send({ deviceId: "d1", payload: new Uint8Array([1, 2]) });
    const r = fake.api().requests[0];
    assert.equal(r.deviceId, "d1");
    assert.equal(r.userId, undefined);
    assert.equal(r.priority, Priority.PRIORITY_NORMAL);
    assert.equal(r.delivery, DeliveryMode.AT_MOST_ONCE);
    assert.deepEqual([...r.payload], [1, 2]);
  });

  test("the API key is sent as bearer metadata", async () => {
    await makeSender("k-123").send({ userId: "u1" });
    assert.deepEqual(fake.api().metadata[0].get("authorization"), ["Bearer k-123"]);
  });

  test("sendBatch keeps order", async () => {
    const responses = await makeSender("k").sendBatch([
      { userId: "u1", payload: "a" },
      makeRequest({ deviceId: "d2", payload: "b" }),
    ]);
    assert.deepEqual(responses.map((r) => r.messageId), ["m1", "m2"]);
    assert.equal(fake.api().requests[1].deviceId, "d2");
    assert.deepEqual(fake.api().metadata[0].get("authorization"), ["Bearer k"]);
  });

  for (const [code, retriable] of [
    [status.UNAUTHENTICATED, false],
    [status.INVALID_ARGUMENT, false],
    [status.PERMISSION_DENIED, false],
    [status.UNAVAILABLE, true],
  ] as const) {
    test(`gRPC ${status[code]} becomes a PushError`, async () => {
      fake.api().fail = { code, details: "because" };
      await assert.rejects(makeSender().send({ userId: "u1" }), (err: unknown) => {
        assert.ok(err instanceof PushError);
        assert.equal(err.code, code);
        assert.equal(err.details, "because");
        assert.equal(err.retriable, retriable);
        assert.equal(err instanceof AuthError, code === status.UNAUTHENTICATED);
        return true;
      });
    });
  }

  test("a rate limit carries the retry hint", async () => {
    fake.api().fail = { code: status.RESOURCE_EXHAUSTED, details: "slow down", trailer: { "retry-after-ms": "250" } };
    await assert.rejects(makeSender().send({ userId: "u1" }), (err: unknown) => {
      assert.ok(err instanceof PushError);
      assert.equal(err.retryAfterMs, 250);
      assert.equal(err.retriable, true);
      return true;
    });
  });

  test("the target is checked before sending", async () => {
    const sender = makeSender();
    assert.throws(() => makeRequest({}), /exactly one/);
    await assert.rejects(async () => sender.send({ userId: "u", deviceId: "d" }), /exactly one/);
    assert.equal(fake.api().requests.length, 0);
    assert.throws(() => new PushSender(""), /api address/);
  });
});
