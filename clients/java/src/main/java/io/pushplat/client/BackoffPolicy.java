package io.pushplat.client;

import java.time.Duration;

/**
 * Hands out the delays between failed connection attempts. The client calls {@link #next()}
 * after a failure and {@link #reset()} after each Welcome. A GoAway is a planned reconnect, not
 * a failure: its delay comes from the edge and the policy is not consulted.
 */
public interface BackoffPolicy {
  Duration next();

  void reset();
}
