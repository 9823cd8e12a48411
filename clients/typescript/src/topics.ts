/**
 * Topics on the device stream: Subscribe/Unsubscribe frames and the edge's SubscriptionResult
 * answers, matched by request_id. The client writes the frames on its live session; this keeps
 * the calls waiting for their answers, and fails them when the stream ends first.
 */

import { PushError } from "./errors";
import type { ClientFrame, SubscriptionResult } from "./gen/pushplat/v1/edge";
import { Status as status } from "./status";

/** The most topics the edge takes in one Subscribe/Unsubscribe frame (more ends the stream). */
export const MAX_TOPICS_PER_REQUEST = 100;

type Waiter = { resolve: (result: SubscriptionResult) => void; reject: (error: PushError) => void };

export class TopicRequests {
  private next = 0;
  private readonly waiting = new Map<string, Waiter>();

  /** The frame for one call, and the promise of its answer. */
  request(kind: "subscribe" | "unsubscribe", topics: string[]): { frame: ClientFrame; answer: Promise<SubscriptionResult> } {
    if (topics.length === 0 || topics.length > MAX_TOPICS_PER_REQUEST) {
      throw new TypeError(`${kind} takes 1 to ${MAX_TOPICS_PER_REQUEST} topics per call, got ${topics.length}`);
    }
    const requestId = String(++this.next);
    const answer = new Promise<SubscriptionResult>((resolve, reject) => this.waiting.set(requestId, { resolve, reject }));
    const body = { topics: [...topics], requestId };
    return { frame: kind === "subscribe" ? { subscribe: body } : { unsubscribe: body }, answer };
  }

  answered(result: SubscriptionResult): void {
    const waiter = this.waiting.get(result.requestId);
    if (waiter !== undefined) {
      this.waiting.delete(result.requestId);
      waiter.resolve(result);
    }
  }

  /** The stream ended: every unanswered call fails with UNAVAILABLE (subscribing is idempotent). */
  failAll(): void {
    for (const waiter of this.waiting.values()) {
      waiter.reject(new PushError(status.UNAVAILABLE, "the stream ended before the edge answered; retry"));
    }
    this.waiting.clear();
  }
}
