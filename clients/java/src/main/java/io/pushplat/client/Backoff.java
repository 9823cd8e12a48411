package io.pushplat.client;

import java.time.Duration;
import java.util.Random;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Exponential backoff with full jitter: the n-th delay (from 0) is drawn uniformly from
 * {@code [0, min(cap, base * 2^n))}.
 *
 * <p>Full jitter (rather than "exponential plus a little noise") spreads a crowd of clients that
 * lost the same edge over the whole window, so they do not reconnect in waves. Thread-safe.
 */
public final class Backoff implements BackoffPolicy {
  /** The first window's upper bound by default, as in the other SDKs. */
  public static final Duration DEFAULT_BASE = Duration.ofMillis(200);
  /** The largest window by default. */
  public static final Duration DEFAULT_CAP = Duration.ofSeconds(30);

  private final long baseNanos;
  private final long capNanos;
  private final Random rng; // null: ThreadLocalRandom
  private int attempt;

  /** {@code Backoff(DEFAULT_BASE, DEFAULT_CAP)}. */
  public Backoff() {
    this(DEFAULT_BASE, DEFAULT_CAP, null);
  }

  public Backoff(Duration base, Duration cap) {
    this(base, cap, null);
  }

  /**
   * @param rng a seeded {@link Random} for reproducible tests, or null for a random one
   * @throws IllegalArgumentException if base is not positive or cap is below base
   */
  public Backoff(Duration base, Duration cap, Random rng) {
    if (base == null || base.isNegative() || base.isZero()) {
      throw new IllegalArgumentException("backoff base must be > 0, got " + base);
    }
    if (cap == null || cap.compareTo(base) < 0) {
      throw new IllegalArgumentException("backoff cap must be >= base, got cap=" + cap + " base=" + base);
    }
    this.baseNanos = base.toNanos();
    this.capNanos = cap.toNanos();
    this.rng = rng;
  }

  public Duration base() {
    return Duration.ofNanos(baseNanos);
  }

  public Duration cap() {
    return Duration.ofNanos(capNanos);
  }

  /** How many delays were handed out since the last reset (it stops growing at the cap). */
  public synchronized int attempt() {
    return attempt;
  }

  /** The upper bound of the next delay. */
  public synchronized Duration ceiling() {
    return Duration.ofNanos(ceilingNanos());
  }

  private long ceilingNanos() {
    long c = baseNanos;
    for (int i = 0; i < attempt && c < capNanos; i++) {
      c = c > capNanos / 2 ? capNanos : c * 2; // no overflow for a client offline for days
    }
    return Math.min(c, capNanos);
  }

  /** The next delay; each call widens the window until it reaches the cap. */
  @Override
  public synchronized Duration next() {
    long c = ceilingNanos();
    if (c < capNanos) {
      attempt++; // stop counting once capped: the window cannot grow further
    }
    double u = rng != null ? rng.nextDouble() : ThreadLocalRandom.current().nextDouble();
    return Duration.ofNanos((long) (u * c));
  }

  /** Start over from the base (after a successful connection). */
  @Override
  public synchronized void reset() {
    attempt = 0;
  }

  @Override
  public String toString() {
    return "Backoff(base=" + base() + ", cap=" + cap() + ", attempt=" + attempt() + ")";
  }
}
