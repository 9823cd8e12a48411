package io.pushplat.client;

import io.pushplat.v1.Priority;
import java.util.Locale;

/** Priority names as the CLI and the other SDKs spell them: "high", "normal", "low". */
public final class Priorities {
  private Priorities() {}

  /**
   * Parses "high", "normal", "low" (or "PRIORITY_HIGH", any case, or "unspecified").
   *
   * @throws IllegalArgumentException for anything else
   */
  public static Priority parse(String name) {
    String key = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
    if (key.startsWith("priority_")) {
      key = key.substring("priority_".length());
    }
    switch (key) {
      case "low":
        return Priority.PRIORITY_LOW;
      case "normal":
        return Priority.PRIORITY_NORMAL;
      case "high":
        return Priority.PRIORITY_HIGH;
      case "unspecified":
        return Priority.PRIORITY_UNSPECIFIED;
      default:
        throw new IllegalArgumentException(
            "invalid priority \"" + name + "\"; expected \"high\", \"normal\" or \"low\"");
    }
  }

  /** "high", "normal" or "low"; unspecified reads as "normal" (the contract says so). */
  public static String name(Priority priority) {
    return priority == Priority.UNRECOGNIZED ? "unknown" : name(priority.getNumber());
  }

  /** As {@link #name(Priority)}, by wire value; unknown values read as "unknown(N)". */
  public static String name(int value) {
    switch (value) {
      case Priority.PRIORITY_LOW_VALUE:
        return "low";
      case Priority.PRIORITY_NORMAL_VALUE:
      case Priority.PRIORITY_UNSPECIFIED_VALUE:
        return "normal";
      case Priority.PRIORITY_HIGH_VALUE:
        return "high";
      default:
        return "unknown(" + value + ")";
    }
  }
}
