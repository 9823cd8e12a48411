package io.pushplat.client;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An LRU set of message ids with a fixed capacity.
 *
 * <p>Redeliveries (an inbox replay after a reconnect, a retry across edges) arrive close to the
 * original, so remembering the most recent ids catches them without growing forever.
 * Thread-safe.
 */
public final class RecentIds {
  /** How many ids a client remembers by default. */
  public static final int DEFAULT_CAPACITY = 10_000;

  private final int capacity;
  private final LinkedHashMap<String, Boolean> ids;

  /** @throws IllegalArgumentException if capacity is below 1 */
  public RecentIds(int capacity) {
    if (capacity < 1) {
      throw new IllegalArgumentException("RecentIds capacity must be >= 1, got " + capacity);
    }
    this.capacity = capacity;
    // Access order: a hit counts as use, so an id that keeps coming back is not evicted.
    this.ids =
        new LinkedHashMap<>(16, 0.75f, true) {
          @Override
          protected boolean removeEldestEntry(Map.Entry<String, Boolean> eldest) {
            return size() > RecentIds.this.capacity;
          }
        };
  }

  public int capacity() {
    return capacity;
  }

  /** Whether id was seen before; if not, it is remembered as the most recent. */
  public synchronized boolean seen(String id) {
    return ids.put(id, Boolean.TRUE) != null;
  }

  /** Remembers id as the most recent, evicting the oldest beyond the capacity. */
  public synchronized void add(String id) {
    ids.put(id, Boolean.TRUE);
  }

  /** Membership, without refreshing recency. */
  public synchronized boolean contains(String id) {
    return ids.containsKey(id);
  }

  public synchronized int size() {
    return ids.size();
  }

  public synchronized void clear() {
    ids.clear();
  }
}
