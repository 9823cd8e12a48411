package io.pushplat.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Descriptors;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.pushplat.v1.EdgeProto;
import io.pushplat.v1.Priority;
import io.pushplat.v1.PushProto;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import java.time.Duration;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.Test;

/** Backoff, dedup, priorities, errors and the hand-built method descriptors. */
class UnitsTest {
  @Test
  void backoffWindowsDoubleUpToTheCap() {
    Backoff b = new Backoff(Duration.ofMillis(100), Duration.ofMillis(1_000), new Random(1));
    long[] ceilings = new long[7];
    for (int i = 0; i < ceilings.length; i++) {
      ceilings[i] = b.ceiling().toMillis();
      Duration d = b.next();
      assertTrue(!d.isNegative() && d.toMillis() < ceilings[i], "delay " + d + " outside [0, " + ceilings[i] + ")");
    }
    assertEquals(List.of(100L, 200L, 400L, 800L, 1000L, 1000L, 1000L),
        java.util.Arrays.stream(ceilings).boxed().toList());
    assertEquals(4, b.attempt(), "stops counting once capped");
    b.reset();
    assertEquals(Duration.ofMillis(100), b.ceiling());
  }

  @Test
  void backoffIsFullJitter() {
    // Full jitter: the delays cover the whole window, not just its top.
    Backoff b = new Backoff(Duration.ofSeconds(1), Duration.ofSeconds(1), new Random(7));
    int low = 0;
    int high = 0;
    for (int i = 0; i < 1_000; i++) {
      long ms = b.next().toMillis();
      assertTrue(ms >= 0 && ms < 1_000);
      low += ms < 250 ? 1 : 0;
      high += ms >= 750 ? 1 : 0;
    }
    assertTrue(low > 150 && high > 150, "low=" + low + " high=" + high);
  }

  @Test
  void backoffRejectsBadBounds() {
    assertThrows(IllegalArgumentException.class, () -> new Backoff(Duration.ZERO, Duration.ofSeconds(1)));
    assertThrows(IllegalArgumentException.class, () -> new Backoff(Duration.ofSeconds(2), Duration.ofSeconds(1)));
  }

  @Test
  void backoffDoesNotOverflowWhenOfflineForLong() {
    Backoff b = new Backoff(Duration.ofNanos(1), Duration.ofDays(365));
    for (int i = 0; i < 10_000; i++) {
      assertFalse(b.next().isNegative());
    }
    assertEquals(Duration.ofDays(365), b.ceiling());
  }

  @Test
  void recentIdsRemembersTheMostRecentAndIsBounded() {
    RecentIds ids = new RecentIds(3);
    assertFalse(ids.seen("a"));
    assertTrue(ids.seen("a"));
    ids.add("b");
    ids.add("c");
    assertTrue(ids.seen("a")); // a hit refreshes a: b is now the oldest
    ids.add("d");
    assertFalse(ids.contains("b"));
    assertTrue(ids.contains("a") && ids.contains("c") && ids.contains("d"));
    for (int i = 0; i < 10_000; i++) {
      ids.add("x" + i);
    }
    assertEquals(3, ids.size());
    assertThrows(IllegalArgumentException.class, () -> new RecentIds(0));
  }

  @Test
  void priorityHelpers() {
    assertEquals(Priority.PRIORITY_HIGH, Priorities.parse("high"));
    assertEquals(Priority.PRIORITY_LOW, Priorities.parse(" PRIORITY_LOW "));
    assertEquals(Priority.PRIORITY_NORMAL, Priorities.parse("Normal"));
    assertThrows(IllegalArgumentException.class, () -> Priorities.parse("urgent"));
    assertEquals("normal", Priorities.name(Priority.PRIORITY_UNSPECIFIED));
    assertEquals("high", Priorities.name(Priority.PRIORITY_HIGH));
    assertEquals("unknown(9)", Priorities.name(9));
  }

  @Test
  void retriableStatuses() {
    for (Status.Code c : List.of(Status.Code.UNAUTHENTICATED, Status.Code.INVALID_ARGUMENT,
        Status.Code.PERMISSION_DENIED, Status.Code.UNIMPLEMENTED, Status.Code.ALREADY_EXISTS)) {
      assertFalse(PushError.isRetriable(c), c.name());
    }
    for (Status.Code c : List.of(Status.Code.UNAVAILABLE, Status.Code.RESOURCE_EXHAUSTED,
        Status.Code.DEADLINE_EXCEEDED, Status.Code.INTERNAL)) {
      assertTrue(PushError.isRetriable(c), c.name());
    }
  }

  @Test
  void retryAfterHintsThatAreNotPositiveNumbersAreIgnored() {
    for (String bad : List.of("", "soon", "-5", "0", "NaN", "Infinity")) {
      io.grpc.Metadata md = new io.grpc.Metadata();
      md.put(PushError.RETRY_AFTER, bad);
      assertEquals(null, PushError.retryAfter(md), bad);
    }
  }

  @Test
  void methodDescriptorsFollowTheProtos() {
    assertEquals("pushplat.v1.Edge/Connect", Rpcs.EDGE_CONNECT.getFullMethodName());
    assertEquals(MethodDescriptor.MethodType.BIDI_STREAMING, Rpcs.EDGE_CONNECT.getType());
    // Every method of the public services has its descriptor here, with the proto's shape.
    Set<String> ours = new HashSet<>();
    for (MethodDescriptor<?, ?> m : List.of(Rpcs.EDGE_CONNECT, Rpcs.PUSH_SEND, Rpcs.PUSH_SEND_BATCH,
        Rpcs.PUSH_GET_STATUS, Rpcs.PUSH_GET_PRESENCE)) {
      ours.add(m.getFullMethodName());
    }
    Set<String> declared = new HashSet<>();
    for (Descriptors.FileDescriptor f : List.of(EdgeProto.getDescriptor(), PushProto.getDescriptor())) {
      for (Descriptors.ServiceDescriptor s : f.getServices()) {
        for (Descriptors.MethodDescriptor m : s.getMethods()) {
          declared.add(s.getFullName() + "/" + m.getName());
        }
      }
    }
    assertTrue(declared.containsAll(ours), "descriptors for methods the protos lack: " + ours);
    assertEquals(MethodDescriptor.MethodType.UNARY, Rpcs.PUSH_SEND.getType());
  }

  @Test
  void aMethodThatDriftedFromTheProtosFailsLoudly() {
    IllegalStateException missing = assertThrows(IllegalStateException.class, () -> Rpcs.method(
        PushProto.getDescriptor(), "Push", "Sned", SendRequest.getDefaultInstance(), SendResponse.getDefaultInstance()));
    assertTrue(missing.getMessage().contains("no method Sned"), missing.getMessage());
    IllegalStateException retyped = assertThrows(IllegalStateException.class, () -> Rpcs.method(
        PushProto.getDescriptor(), "Push", "Send", SendResponse.getDefaultInstance(), SendRequest.getDefaultInstance()));
    assertTrue(retyped.getMessage().contains("takes pushplat.v1.SendRequest"), retyped.getMessage());
  }
}
