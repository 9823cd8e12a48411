/** PushSender.stream() against a fake Push service: answers matched by request id, the window,
 * per-item errors, and a refused stream. */

import { status } from "@grpc/grpc-js";
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { AuthError, PushError, PushSender } from "../src/index";
import { Deferred, until, useFakePush, within } from "./fakes";

const fake = useFakePush();
const makeSender = fake.makeSender;

describe("SendStream", () => {
  test("answers are matched to their sends", async () => {
    const stream = makeSender("k").stream({ window: 8 });
    const replies = await within(
      Promise.all(Array.from({ length: 40 }, (_, i) => stream.send({ deviceId: "d", payload: `p${i}` }))),
    );
    assert.equal(new Set(fake.api().requests.map((r) => r.requestId)).size, 40);
    for (const reply of replies) assert.equal(reply.messageId, `m-${reply.requestId}`);
    assert.equal(fake.api().metadata[0].get("authorization")[0], "Bearer k");
    await stream.close();
  });

  test("the window bounds unanswered requests", async () => {
    const gate = new Deferred();
    fake.api().answering = gate.promise;
    const stream = makeSender().stream({ window: 3 });
    const sends = Array.from({ length: 10 }, () => stream.send({ deviceId: "d", payload: "x" }));
    await until(() => fake.api().requests.length === 3, "3 requests at the api");
    assert.equal(stream.unanswered, 3);
    assert.equal(fake.api().requests.length, 3, "the other 7 wait on the client");
    gate.resolve();
    assert.equal((await within(Promise.all(sends))).length, 10);
    assert.equal(fake.api().requests.length, 10);
    await stream.close();
    assert.equal(stream.unanswered, 0);
  });

  test("a refused item rejects only its own send", async () => {
    const stream = makeSender().stream();
    const [ok, refused] = await Promise.allSettled([
      stream.send({ deviceId: "d", payload: "fine" }),
      stream.send({ deviceId: "d", payload: "refuse" }),
    ]);
    assert.equal(ok.status, "fulfilled");
    assert.equal(refused.status, "rejected");
    const error = (refused as PromiseRejectedResult).reason as PushError;
    assert.ok(error instanceof PushError);
    assert.equal(error.code, status.INVALID_ARGUMENT);
    assert.equal(error.details, "refused");
    assert.ok((await stream.send({ deviceId: "d", payload: "after" })).messageId, "the stream carried on");
    await stream.close();
  });

  test("a refused stream rejects every send", async () => {
    fake.api().fail = { code: status.UNAUTHENTICATED, details: "unknown API key" };
    const stream = makeSender("wrong").stream();
    await assert.rejects(within(stream.send({ deviceId: "d", payload: "x" })), AuthError);
    await assert.rejects(stream.send({ deviceId: "d", payload: "y" }), AuthError);
    assert.throws(() => makeSender().stream({ window: 0 }), RangeError);
  });
});
