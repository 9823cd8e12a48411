/** Priority helpers: accept "high" / "normal" / "low" (or the enum) wherever a priority is asked for. */

import { Priority } from "./gen/pushplat/v1/message";

export { Priority };

export type PriorityLike = Priority | "high" | "normal" | "low" | "unspecified" | string;

const BY_NAME: Record<string, Priority> = {
  low: Priority.PRIORITY_LOW,
  normal: Priority.PRIORITY_NORMAL,
  high: Priority.PRIORITY_HIGH,
  unspecified: Priority.PRIORITY_UNSPECIFIED,
};

/** `"high"`, `"PRIORITY_HIGH"` or `3` -> `Priority.PRIORITY_HIGH`; throws for anything else. */
export function parsePriority(value: PriorityLike): Priority {
  if (typeof value === "number") {
    if ([0, 1, 2, 3].includes(value)) return value as Priority;
    throw new RangeError(`invalid priority ${value}; expected 0..3`);
  }
  if (typeof value === "string") {
    const key = value.trim().toLowerCase().replace(/^priority_/, "");
    if (key in BY_NAME) return BY_NAME[key];
  }
  throw new RangeError(`invalid priority ${JSON.stringify(value)}; expected 'high', 'normal' or 'low'`);
}

/** `3` -> `"high"`; unspecified reads as `"normal"` (the contract says so). */
export function priorityName(value: Priority): string {
  switch (value) {
    case Priority.PRIORITY_LOW:
      return "low";
    case Priority.PRIORITY_NORMAL:
    case Priority.PRIORITY_UNSPECIFIED:
      return "normal";
    case Priority.PRIORITY_HIGH:
      return "high";
    default:
      return `unknown(${value})`;
  }
}
