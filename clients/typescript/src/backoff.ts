/** Exponential backoff with full jitter, for reconnect loops. */

/** Hands out the delays between failed connection attempts; reset after each Welcome. */
export interface BackoffPolicy {
  /** The next delay in milliseconds. */
  nextDelay(): number;
  reset(): void;
}

export const DEFAULT_BACKOFF_BASE_MS = 200;
export const DEFAULT_BACKOFF_CAP_MS = 30_000;

/**
 * Delays for successive retries: `uniform(0, min(cap, base * 2**attempt))` milliseconds.
 *
 * Full jitter (rather than "exponential plus a little noise") spreads a crowd of clients that
 * lost the same edge over the whole window, so they do not reconnect in waves.
 */
export class Backoff implements BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
  private readonly random: () => number;
  private _attempt = 0;

  constructor(baseMs = DEFAULT_BACKOFF_BASE_MS, capMs = DEFAULT_BACKOFF_CAP_MS, random: () => number = Math.random) {
    if (!(baseMs > 0)) throw new RangeError(`Backoff base must be > 0, got ${baseMs}`);
    if (!(capMs >= baseMs)) throw new RangeError(`Backoff cap must be >= base, got cap=${capMs} base=${baseMs}`);
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.random = random;
  }

  /** How many delays were handed out since the last reset (stops growing at the cap). */
  get attempt(): number {
    return this._attempt;
  }

  /** The upper bound of the next delay. */
  ceiling(): number {
    return Math.min(this.capMs, this.baseMs * 2 ** this._attempt);
  }

  nextDelay(): number {
    const ceiling = this.ceiling();
    // Stop counting once capped: the window cannot grow further.
    if (ceiling < this.capMs) this._attempt += 1;
    return this.random() * ceiling;
  }

  reset(): void {
    this._attempt = 0;
  }
}
