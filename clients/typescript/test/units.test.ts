/** Backoff, dedup and priority helpers. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { Backoff, Priority, RecentIds, parsePriority, priorityName } from "../src/index";

function seeded(seed: number): () => number {
  // mulberry32: a tiny deterministic PRNG for reproducible jitter.
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("Backoff", () => {
  test("windows double up to the cap, and reset starts over", () => {
    const b = new Backoff(100, 1000, seeded(1));
    for (const want of [100, 200, 400, 800, 1000, 1000]) {
      assert.equal(b.ceiling(), want);
      const d = b.nextDelay();
      assert.ok(d >= 0 && d < want, `delay ${d} outside [0, ${want})`);
    }
    assert.equal(b.attempt, 4); // stops counting once capped
    b.reset();
    assert.equal(b.attempt, 0);
    assert.equal(b.ceiling(), 100);
  });

  test("full jitter spreads delays over the whole window", () => {
    const b = new Backoff(1000, 1000, seeded(2));
    let low = 0;
    let high = 0;
    for (let i = 0; i < 1000; i++) {
      const d = b.nextDelay();
      assert.ok(d >= 0 && d < 1000);
      if (d < 250) low++;
      if (d > 750) high++;
    }
    assert.ok(low > 150 && high > 150, `low=${low} high=${high}`);
  });

  test("rejects bad bounds and does not overflow", () => {
    assert.throws(() => new Backoff(0, 10), RangeError);
    assert.throws(() => new Backoff(10, 5), RangeError);
    const b = new Backoff(1, 3_600_000);
    for (let i = 0; i < 10_000; i++) {
      const d = b.nextDelay();
      assert.ok(Number.isFinite(d) && d >= 0 && d < 3_600_000);
    }
  });
});

describe("RecentIds", () => {
  test("is an LRU set", () => {
    const r = new RecentIds(3);
    for (const id of ["a", "b", "c"]) assert.equal(r.seen(id), false);
    assert.equal(r.seen("a"), true); // refreshes a: b is now the oldest
    r.seen("d"); // evicts b
    assert.deepEqual(["a", "b", "c", "d"].map((id) => r.has(id)), [true, false, true, true]);
    r.add("e"); // evicts c (has() does not refresh)
    assert.equal(r.has("c"), false);
    assert.equal(r.size, 3);
    r.clear();
    assert.equal(r.size, 0);
  });

  test("is bounded", () => {
    const r = new RecentIds(100);
    for (let i = 0; i < 10_000; i++) r.seen(`m${i}`);
    assert.equal(r.size, 100);
    assert.throws(() => new RecentIds(0), RangeError);
  });
});

describe("priority", () => {
  test("parse and name", () => {
    assert.equal(parsePriority("high"), Priority.PRIORITY_HIGH);
    assert.equal(parsePriority("PRIORITY_LOW"), Priority.PRIORITY_LOW);
    assert.equal(parsePriority(" Normal "), Priority.PRIORITY_NORMAL);
    assert.equal(parsePriority(3), Priority.PRIORITY_HIGH);
    assert.throws(() => parsePriority("urgent"), RangeError);
    assert.throws(() => parsePriority(7 as Priority), RangeError);
    assert.equal(priorityName(Priority.PRIORITY_UNSPECIFIED), "normal");
    assert.equal(priorityName(Priority.PRIORITY_HIGH), "high");
  });
});
