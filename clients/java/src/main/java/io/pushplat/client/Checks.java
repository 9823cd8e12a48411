package io.pushplat.client;

import java.time.Duration;

/** Argument checks shared by the builders. */
final class Checks {
  private Checks() {}

  /** @throws IllegalArgumentException unless d is a positive duration */
  static Duration positive(Duration d, String name) {
    if (d == null || d.isNegative() || d.isZero()) {
      throw new IllegalArgumentException(name + " must be > 0, got " + d);
    }
    return d;
  }
}
