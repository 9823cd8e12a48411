/** Bounded memory of recently seen message ids. */

export const DEFAULT_DEDUP_CAPACITY = 10_000;

/**
 * An LRU set of message ids with a fixed capacity.
 *
 * Redeliveries (inbox replay after a reconnect, a retry across edges) arrive close to the
 * original, so remembering the most recent ids catches them without growing forever.
 */
export class RecentIds {
  readonly capacity: number;
  // A Map iterates in insertion order: the first key is the least recently used.
  private readonly ids = new Map<string, true>();

  constructor(capacity = DEFAULT_DEDUP_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`RecentIds capacity must be an integer >= 1, got ${capacity}`);
    }
    this.capacity = capacity;
  }

  /** True if `id` was seen before; otherwise remember it and return false. A hit refreshes it. */
  seen(id: string): boolean {
    if (this.ids.has(id)) {
      this.add(id);
      return true;
    }
    this.add(id);
    return false;
  }

  /** Remember `id` as the most recent, evicting the oldest beyond capacity. */
  add(id: string): void {
    this.ids.delete(id);
    this.ids.set(id, true);
    while (this.ids.size > this.capacity) {
      const oldest = this.ids.keys().next().value as string;
      this.ids.delete(oldest);
    }
  }

  /** Membership test only; does not refresh recency. */
  has(id: string): boolean {
    return this.ids.has(id);
  }

  get size(): number {
    return this.ids.size;
  }

  clear(): void {
    this.ids.clear();
  }
}
