package io.pushplat.client;

import static io.pushplat.client.FakeEdge.WAIT;
import static io.pushplat.client.FakeEdge.eventually;
import static io.pushplat.client.FakeEdge.msg;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.grpc.Status;
import io.pushplat.v1.Ack;
import io.pushplat.v1.GoAway;
import io.pushplat.v1.Hello;
import io.pushplat.v1.ClientFrame;
import io.pushplat.v1.Message;
import io.pushplat.v1.ServerFrame;
import io.pushplat.v1.SubscriptionResult;
import io.pushplat.v1.TopicRefusal;
import java.net.ServerSocket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** The device client against a scripted in-process edge. */
class PushClientTest {
  private final List<AutoCloseable> resources = new ArrayList<>();

  @AfterEach
  void tearDown() throws Exception {
    Collections.reverse(resources);
    for (AutoCloseable r : resources) {
      r.close();
    }
  }

  /** A real Backoff that counts how often the client asked for a delay. */
  static final class CountingBackoff implements BackoffPolicy {
    final Backoff inner;
    final AtomicInteger calls = new AtomicInteger();

    CountingBackoff(Duration base, Duration cap) {
      inner = new Backoff(base, cap);
    }

    @Override
    public Duration next() {
      calls.incrementAndGet();
      return inner.next();
    }

    @Override
    public void reset() {
      inner.reset();
    }
  }

  private FakeEdge edge() throws Exception {
    FakeEdge e = FakeEdge.inProcess();
    resources.add(e);
    return e;
  }

  private PushClient.Builder clientFor(FakeEdge... edges) {
    List<String> names = new ArrayList<>();
    for (FakeEdge e : edges) {
      names.add(e.name);
    }
    return PushClient.builder(names)
        .userId("u1")
        .deviceId("d1")
        .backoff(new CountingBackoff(Duration.ofMillis(10), Duration.ofMillis(50)))
        .channelFactory(FakeEdge.channels());
  }

  private PushClient start(PushClient.Builder b) {
    PushClient c = b.build();
    resources.add(c);
    return c;
  }

  private static Message recv(PushClient c) throws InterruptedException {
    Message m = c.receive(WAIT);
    assertNotNull(m, "no message within " + WAIT);
    return m;
  }

  private static void waitConnected(PushClient c) throws Exception {
    c.waitConnected(WAIT);
  }

  private static long millisSince(long nanos) {
    return TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - nanos);
  }

  @Test
  void buildNeedsAnEdgeAndATokenOrADeviceId() {
    assertThrows(IllegalArgumentException.class, () -> PushClient.builder("127.0.0.1:1").build());
    assertThrows(IllegalArgumentException.class, () -> PushClient.builder("127.0.0.1:1").userId("u1").build());
    assertThrows(IllegalArgumentException.class, () -> PushClient.builder(" , ").token("t").build());
    assertThrows(IllegalArgumentException.class,
        () -> PushClient.builder("e").token("t").heartbeatInterval(Duration.ZERO).build());
    assertThrows(IllegalArgumentException.class, () -> PushClient.builder("e").token("t").maxBuffered(0).build());
    assertThrows(IllegalArgumentException.class, () -> PushClient.builder("e").token("t").dedupCapacity(0).build());
    PushClient.builder("127.0.0.1:1").token("t").build().close(Duration.ZERO);
    PushClient.builder("127.0.0.1:1").deviceId("d1").build().close(Duration.ZERO);
  }

  @Test
  void helloWelcomeThenPushesInOrder() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).token("tok").clientVersion("test/1"));
    FakeEdge.Conn conn = e.nextConn();
    Hello h = conn.hello;
    assertEquals(List.of("tok", "u1", "d1", "test/1"),
        List.of(h.getToken(), h.getUserId(), h.getDeviceId(), h.getClientVersion()));
    conn.welcome("sess-1", 0);
    waitConnected(c);
    assertEquals("sess-1", c.sessionId());
    assertEquals("edge-test", c.edgeId());
    assertEquals(1, c.connects());
    assertTrue(c.isConnected());
    conn.push(
        msg("m1").toBuilder().setPayload(ByteString.copyFromUtf8("hello")).setContentType("text/plain").putLabels("k", "v").build(),
        msg("m2"));
    conn.push(msg("m3"));
    List<Message> got = List.of(recv(c), recv(c), recv(c));
    assertEquals(List.of("m1", "m2", "m3"), got.stream().map(Message::getMessageId).toList());
    assertEquals("hello", got.get(0).getPayload().toStringUtf8());
    assertEquals("text/plain", got.get(0).getContentType());
    assertEquals("v", got.get(0).getLabelsMap().get("k"));
  }

  @Test
  void subscribeSendsAFrameAndReturnsTheEdgesAnswer() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    waitConnected(c);
    CompletableFuture<SubscriptionResult> answer =
        CompletableFuture.supplyAsync(() -> unchecked(() -> c.subscribe(WAIT, "news", "bad name")));
    ClientFrame frame = conn.topicFrames.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    assertNotNull(frame, "no Subscribe frame");
    assertEquals(List.of("news", "bad name"), frame.getSubscribe().getTopicsList());
    String id = frame.getSubscribe().getRequestId();
    conn.send(ServerFrame.newBuilder()
        .setSubscription(SubscriptionResult.newBuilder()
            .setRequestId(id)
            .addApplied("news")
            .addRefused(TopicRefusal.newBuilder().setTopic("bad name").setCode(3).setMessage("topic names must match"))
            .setTopicCount(1))
        .build());
    SubscriptionResult result = answer.get(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    assertEquals(List.of("news"), result.getAppliedList());
    assertEquals(3, result.getRefused(0).getCode());

    // The stream ends before the edge answers an Unsubscribe: the call fails with UNAVAILABLE.
    CompletableFuture<SubscriptionResult> pending =
        CompletableFuture.supplyAsync(() -> unchecked(() -> c.unsubscribe(WAIT, "news")));
    ClientFrame unsub = conn.topicFrames.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    assertNotNull(unsub, "no Unsubscribe frame");
    assertEquals(List.of("news"), unsub.getUnsubscribe().getTopicsList());
    conn.abort(Status.Code.UNAVAILABLE, "edge went away");
    ExecutionException failed = assertThrows(ExecutionException.class, () -> pending.get(WAIT.toMillis(), TimeUnit.MILLISECONDS));
    PushError error = assertInstanceOf(PushError.class, failed.getCause());
    assertEquals(Status.Code.UNAVAILABLE, error.code());
    assertThrows(IllegalArgumentException.class, () -> c.subscribe(WAIT));
  }

  private interface Call<T> {
    T call() throws Exception;
  }

  private static <T> T unchecked(Call<T> call) {
    try {
      return call.call();
    } catch (Exception ex) {
      throw new java.util.concurrent.CompletionException(ex);
    }
  }

  @Test
  void defaultClientVersionNamesTheSdk() throws Exception {
    FakeEdge e = edge();
    start(clientFor(e));
    assertEquals("pushplat-java/" + PushClient.VERSION, e.nextConn().hello.getClientVersion());
  }

  @Test
  void autoAcksArriveCoalesced() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    List<Message> batch = new ArrayList<>();
    String[] ids = new String[50];
    for (int i = 0; i < 50; i++) {
      ids[i] = "m" + i;
      batch.add(msg(ids[i]));
    }
    conn.push(batch.toArray(Message[]::new));
    for (int i = 0; i < 50; i++) {
      recv(c);
    }
    List<Ack> frames = conn.acksUntil(ids);
    // Handed over in one burst, so the acks travel together, not one frame per message.
    assertTrue(frames.size() <= 2, "50 acks took " + frames.size() + " frames");
  }

  @Test
  void ackFramesAreSplitAtTheLimit() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).autoAck(false));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    waitConnected(c);
    List<String> ids = new ArrayList<>();
    for (int i = 0; i < PushClient.MAX_ACK_IDS_PER_FRAME + 10; i++) {
      ids.add("id-" + i);
    }
    c.ack(ids);
    assertEquals(ids.subList(0, PushClient.MAX_ACK_IDS_PER_FRAME), conn.nextAck().getMessageIdsList());
    assertEquals(ids.subList(PushClient.MAX_ACK_IDS_PER_FRAME, ids.size()), conn.nextAck().getMessageIdsList());
  }

  @Test
  void duplicateIsAckedButNotHandedOver() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("m1"));
    assertEquals("m1", recv(c).getMessageId());
    conn.acksUntil("m1");
    // The edge redelivers m1 (an inbox replay): the app must not see it again, but the edge must
    // get its ack again so that it can drop the copy.
    conn.push(msg("m1").toBuilder().setRequiresAck(true).build());
    assertEquals(List.of("m1"), conn.nextAck().getMessageIdsList());
    conn.push(msg("m2"));
    assertEquals("m2", recv(c).getMessageId(), "the duplicate must be dropped");
  }

  @Test
  void duplicateWithinOneBatchIsDropped() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("m1"), msg("m1"), msg("m2"));
    assertEquals("m1", recv(c).getMessageId());
    assertEquals("m2", recv(c).getMessageId());
    conn.acksUntil("m1", "m2");
    assertNull(c.receive(Duration.ofMillis(50)));
  }

  @Test
  void dedupIsBoundedAndForgetsTheOldest() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).dedupCapacity(2));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("a"), msg("b"), msg("c")); // remembers b and c only
    for (String id : List.of("a", "b", "c")) {
      assertEquals(id, recv(c).getMessageId());
    }
    conn.push(msg("c"), msg("a"));
    assertEquals("a", recv(c).getMessageId(), "a was forgotten, so it is new again; c is still a duplicate");
  }

  @Test
  void manualAck() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).autoAck(false));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("m1"), msg("m2"));
    recv(c);
    recv(c);
    c.ack("m2");
    // Nothing was acked on its own: the first Ack frame holds only what the app acked.
    assertEquals(List.of("m2"), conn.nextAck().getMessageIdsList());
    c.ack("m1");
    assertEquals(List.of("m1"), conn.nextAck().getMessageIdsList());
  }

  @Test
  void acksMadeWhileDisconnectedGoOutAfterReconnect() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).autoAck(false));
    FakeEdge.Conn first = e.nextConn();
    first.welcome("s0", 0);
    first.push(msg("m1"));
    recv(c);
    first.abort(Status.Code.UNAVAILABLE, "edge restarting");
    FakeEdge.Conn second = e.nextConn(); // the client is now between Hello and Welcome
    c.ack("m1");
    second.welcome("s1", 0);
    assertEquals(List.of("m1"), second.nextAck().getMessageIdsList());
  }

  @Test
  void pendingAcksAreBoundedWhileDisconnected() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).autoAck(false).dedupCapacity(3));
    FakeEdge.Conn first = e.nextConn();
    first.abort(Status.Code.UNAVAILABLE, "down");
    FakeEdge.Conn second = e.nextConn();
    c.ack("a", "b", "c", "d", "e");
    second.welcome("s1", 0);
    // The oldest two were dropped; the edge will replay those messages and they are re-acked.
    assertEquals(List.of("c", "d", "e"), second.nextAck().getMessageIdsList());
  }

  @Test
  void heartbeatPingsUseTheWelcomeIntervalAndPongsKeepItAlive() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    long welcomedAt = System.nanoTime();
    conn.welcome("s0", 100);
    waitConnected(c);
    long firstPing = conn.nextPing();
    assertTrue(firstPing - welcomedAt >= TimeUnit.MILLISECONDS.toNanos(90), "first ping not paced by the Welcome");
    // Four pings span 400 ms, beyond the 300 ms silence limit: the pongs kept it alive.
    for (int i = 0; i < 3; i++) {
      conn.nextPing();
    }
    assertEquals(1, c.connects());
    assertEquals(1, e.connections().size());
    assertFalse(conn.isGone());
  }

  @Test
  void silentEdgeIsTreatedAsDeadAndReplaced() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).heartbeatInterval(Duration.ofMillis(100)));
    FakeEdge.Conn first = e.nextConn();
    first.autoPong = false;
    long welcomedAt = System.nanoTime();
    first.welcome("s0", 10_000); // the client's own interval wins
    FakeEdge.Conn second = e.nextConn();
    // Dead only after three silent intervals, not at the first unanswered ping.
    long after = TimeUnit.NANOSECONDS.toMillis(second.helloAtNanos - welcomedAt);
    assertTrue(after >= 290, "declared dead after " + after + " ms");
    assertTrue(first.pings.size() >= 1, "the silent edge was pinged before it was given up");
    first.waitGone();
    second.welcome("s1", 0);
    eventually(() -> c.connects() == 2, "the second Welcome");
  }

  @Test
  void goAwayReconnectsAfterTheDelayWithoutBackoff() throws Exception {
    FakeEdge e = edge();
    CountingBackoff backoff = new CountingBackoff(Duration.ofSeconds(5), Duration.ofSeconds(5)); // would blow WAIT
    PushClient c = start(clientFor(e).backoff(backoff));
    FakeEdge.Conn first = e.nextConn();
    first.welcome("s-old", 0);
    waitConnected(c);
    long sentAt = System.nanoTime();
    first.goAway(300, GoAway.Reason.DRAINING);
    FakeEdge.Conn second = e.nextConn();
    long after = TimeUnit.NANOSECONDS.toMillis(second.helloAtNanos - sentAt);
    assertTrue(after >= 290, "reconnected after " + after + " ms, before the GoAway delay");
    assertEquals("d1", second.hello.getDeviceId());
    first.waitGone(); // the old stream was closed
    GoAway g = c.lastGoAway().orElseThrow();
    assertEquals(GoAway.Reason.DRAINING, g.getReason());
    assertEquals(300, g.getReconnectAfterMs());
    second.welcome("s-new", 0);
    second.push(msg("after"));
    assertEquals("after", recv(c).getMessageId());
    assertEquals("s-new", c.sessionId());
    assertEquals(2, c.connects());
    assertEquals(0, backoff.calls.get());
  }

  @Test
  void goAwayBeforeWelcomeIsHonoured() throws Exception {
    FakeEdge e = edge();
    CountingBackoff backoff = new CountingBackoff(Duration.ofSeconds(5), Duration.ofSeconds(5));
    PushClient c = start(clientFor(e).backoff(backoff));
    FakeEdge.Conn first = e.nextConn();
    long sentAt = System.nanoTime();
    first.goAway(100, GoAway.Reason.DRAINING);
    FakeEdge.Conn second = e.nextConn();
    assertTrue(TimeUnit.NANOSECONDS.toMillis(second.helloAtNanos - sentAt) >= 90);
    second.welcome("s1", 0);
    waitConnected(c);
    assertEquals(1, c.connects());
    assertEquals(0, backoff.calls.get());
  }

  @Test
  void unavailableThenReconnectsAndTheWelcomeResetsTheBackoff() throws Exception {
    FakeEdge e = edge();
    CountingBackoff backoff = new CountingBackoff(Duration.ofMillis(10), Duration.ofMillis(50));
    PushClient c = start(clientFor(e).backoff(backoff));
    e.nextConn().abort(Status.Code.UNAVAILABLE, "try later");
    FakeEdge.Conn second = e.nextConn();
    second.welcome("s1", 0);
    second.push(msg("m1"));
    assertEquals("m1", recv(c).getMessageId());
    assertEquals(1, c.connects());
    assertEquals(1, backoff.calls.get());
    assertEquals(0, backoff.inner.attempt(), "reset by the Welcome");
  }

  @Test
  void repeatedFailuresWidenTheBackoffWindow() throws Exception {
    FakeEdge e = edge();
    CountingBackoff backoff = new CountingBackoff(Duration.ofMillis(1), Duration.ofMillis(8));
    start(clientFor(e).backoff(backoff));
    for (int i = 0; i < 4; i++) {
      e.nextConn().abort(Status.Code.UNAVAILABLE, "down");
    }
    e.nextConn();
    assertEquals(4, backoff.calls.get());
    assertEquals(Duration.ofMillis(8), backoff.inner.ceiling(), "1, 2, 4, 8 ms: doubled up to the cap");
  }

  @Test
  void cleanEndOfStreamReconnects() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn first = e.nextConn();
    first.welcome("s0", 0);
    waitConnected(c);
    first.end();
    FakeEdge.Conn second = e.nextConn();
    second.welcome("s1", 0);
    second.push(msg("m1"));
    assertEquals("m1", recv(c).getMessageId());
    assertEquals(2, c.connects());
  }

  @Test
  void resourceExhaustedHonoursRetryAfter() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn first = e.nextConn();
    long abortedAt = System.nanoTime();
    first.abort(Status.Code.RESOURCE_EXHAUSTED, "slow down", PushError.RETRY_AFTER_KEY, "300");
    FakeEdge.Conn second = e.nextConn();
    // The backoff alone (base 10 ms) would have come back much sooner.
    long after = TimeUnit.NANOSECONDS.toMillis(second.helloAtNanos - abortedAt);
    assertTrue(after >= 290, "reconnected after " + after + " ms");
    second.welcome("s1", 0);
    waitConnected(c);
  }

  @Test
  void edgesAreRotatedOnReconnect() throws Exception {
    FakeEdge a = edge();
    FakeEdge b = edge();
    PushClient c = start(clientFor(a, b));
    // The first attempt goes to a random one of the two; the next goes to the other.
    FakeEdge.Conn first = firstOf(a, b);
    FakeEdge other = a.connections().isEmpty() ? a : b;
    first.abort(Status.Code.UNAVAILABLE, "dying");
    FakeEdge.Conn second = other.nextConn();
    second.welcome("s-other", 0);
    waitConnected(c);
    assertEquals(other.name, c.edge());
    second.goAway(0, GoAway.Reason.DRAINING);
    FakeEdge back = other == a ? b : a;
    back.nextConn().welcome("s-back", 0);
    eventually(() -> c.connects() == 2, "the reconnect to the first edge");
    assertEquals(back.name, c.edge());
  }

  private static FakeEdge.Conn firstOf(FakeEdge a, FakeEdge b) throws Exception {
    long deadline = System.nanoTime() + WAIT.toNanos();
    while (System.nanoTime() < deadline) {
      for (FakeEdge e : List.of(a, b)) {
        FakeEdge.Conn conn = e.pollConn(Duration.ofMillis(5));
        if (conn != null) {
          return conn;
        }
      }
    }
    throw new AssertionError("no connection to either edge");
  }

  @Test
  void unauthenticatedSurfacesAndStops() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).token("bad"));
    e.nextConn().abort(Status.Code.UNAUTHENTICATED, "token expired");
    PushError err = assertThrows(PushError.class, () -> c.receive(WAIT));
    assertInstanceOf(AuthError.class, err);
    assertEquals(Status.Code.UNAUTHENTICATED, err.code());
    assertEquals("token expired", err.details());
    assertFalse(err.isRetriable());
    // Sticky, from every entry point, and no retry was made.
    assertInstanceOf(AuthError.class, assertThrows(PushError.class, () -> c.receive(WAIT)));
    assertInstanceOf(AuthError.class, assertThrows(PushError.class, () -> c.waitConnected(WAIT)));
    assertInstanceOf(AuthError.class, c.error().orElseThrow());
    assertNull(e.pollConn(Duration.ofMillis(100)), "it retried");
  }

  @ParameterizedTest
  @EnumSource(value = Status.Code.class, names = {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNIMPLEMENTED"})
  void otherNonRetriableStatusesSurface(Status.Code code) throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    e.nextConn().abort(code, "no");
    PushError err = assertThrows(PushError.class, () -> c.waitConnected(WAIT));
    assertEquals(code, err.code());
    assertFalse(err.isRetriable());
    assertFalse(err instanceof AuthError);
  }

  @Test
  void reconnectOffSurfacesTheRetriableError() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).reconnect(false));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("m1"));
    conn.abort(Status.Code.UNAVAILABLE, "gone");
    // Messages that arrived before the failure are still handed over first.
    assertEquals("m1", recv(c).getMessageId());
    PushError err = assertThrows(PushError.class, () -> c.receive(WAIT));
    assertEquals(Status.Code.UNAVAILABLE, err.code());
    assertNull(e.pollConn(Duration.ofMillis(100)), "it reconnected");
  }

  @Test
  void reconnectOffEndsCleanlyOnAGoAway() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).reconnect(false));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.goAway(0, GoAway.Reason.MAX_AGE);
    assertThrows(ClientClosedException.class, () -> c.receive(WAIT));
    assertNull(e.pollConn(Duration.ofMillis(100)));
  }

  @Test
  void closeFlushesAcksHalfClosesAndStopsReceive() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    conn.push(msg("m1"));
    recv(c);
    CompletableFuture<Object> blocked = CompletableFuture.supplyAsync(() -> {
      try {
        return c.receive();
      } catch (Throwable t) {
        return t;
      }
    });
    c.close();
    // The ack went out before the stream was half-closed.
    assertEquals(List.of("m1"), conn.acked);
    assertEquals(0, conn.halfClosed.getCount(), "stream not half-closed");
    assertInstanceOf(ClientClosedException.class, blocked.get(WAIT.toMillis(), TimeUnit.MILLISECONDS),
        "a blocked receive was not released by close");
    assertThrows(ClientClosedException.class, () -> c.receive(WAIT));
    assertTrue(c.isClosed());
    assertFalse(c.isConnected());
    c.close(); // idempotent
  }

  @Test
  void closeDoesNotHangOnAnEdgeThatIgnoresTheHalfClose() throws Exception {
    FakeEdge e = edge();
    e.endOnHalfClose = false;
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    waitConnected(c);
    long started = System.nanoTime();
    c.close(Duration.ofMillis(100));
    assertTrue(millisSince(started) < 900, "close took " + millisSince(started) + " ms");
    conn.waitGone(); // cancelled once the grace ran out
  }

  @Test
  void waitConnectedTimesOutWhenTheEdgeIsUnreachable() throws Exception {
    int port;
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      port = s.getLocalPort(); // a port nobody listens on once closed
    }
    // The real (Netty) transport this time.
    PushClient c = start(PushClient.builder("127.0.0.1:" + port).deviceId("d1")
        .backoff(new Backoff(Duration.ofMillis(10), Duration.ofMillis(50))));
    assertThrows(TimeoutException.class, () -> c.waitConnected(Duration.ofMillis(300)));
    assertEquals(0, c.connects());
    assertTrue(c.error().isEmpty(), "an unreachable edge is retried, not fatal");
  }

  @Test
  void noWelcomeWithinTheConnectTimeoutIsRetried() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).connectTimeout(Duration.ofMillis(300)));
    FakeEdge.Conn first = e.nextConn(); // never welcomes
    FakeEdge.Conn second = e.nextConn();
    second.welcome("s1", 0);
    assertTrue(TimeUnit.NANOSECONDS.toMillis(second.helloAtNanos - first.helloAtNanos) >= 290);
    first.waitGone();
    waitConnected(c);
    assertEquals("s1", c.sessionId());
  }

  @Test
  void aFullBufferStopsReadingUntilTheAppCatchesUp() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e).maxBuffered(2).heartbeatInterval(Duration.ofMillis(30)));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    waitConnected(c);
    for (int i = 0; i < 10; i++) {
      conn.push(msg("m" + i));
    }
    // Paused for five heartbeat intervals (the silence limit is three): not reading is not a
    // dead connection, and the pings go on so that the edge does not think so either.
    eventually(() -> conn.pings.size() >= 5, "pings while paused");
    // Two frames filled the buffer; the client stopped asking for the other eight.
    assertFalse(conn.clientReading(), "the client kept reading into a full buffer");
    assertEquals(1, e.connections().size());
    for (int i = 0; i < 10; i++) {
      assertEquals("m" + i, recv(c).getMessageId());
    }
    assertEquals(1, c.connects());
  }

  @Test
  void expiredMessagesAreNotHandedOver() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    conn.welcome("s0", 0);
    long now = System.currentTimeMillis();
    conn.push(
        msg("old").toBuilder().setExpiresAtMs(now - 1_000).build(),
        msg("fresh").toBuilder().setExpiresAtMs(now + 60_000).build(),
        msg("forever"));
    assertEquals("fresh", recv(c).getMessageId());
    assertEquals("forever", recv(c).getMessageId());
  }

  @Test
  void receiveWithATimeoutReturnsNullWhenNothingCame() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    e.nextConn().welcome("s0", 0);
    waitConnected(c);
    long started = System.nanoTime();
    assertNull(c.receive(Duration.ofMillis(50)));
    assertTrue(millisSince(started) >= 45);
  }

  @Test
  void aClientThreadDoesNotOutliveClose() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    e.nextConn().welcome("s0", 0);
    waitConnected(c);
    c.close();
    eventually(() -> Thread.getAllStackTraces().keySet().stream()
        .noneMatch(t -> t.getName().equals("pushplat-client-d1") && t.isAlive()), "the connection thread to end");
  }

  @Test
  void aBlockedReceiveSeesTheStopError() throws Exception {
    FakeEdge e = edge();
    PushClient c = start(clientFor(e));
    FakeEdge.Conn conn = e.nextConn();
    CompletableFuture<Message> pending = CompletableFuture.supplyAsync(() -> {
      try {
        return c.receive();
      } catch (InterruptedException ex) {
        throw new IllegalStateException(ex);
      }
    });
    conn.abort(Status.Code.PERMISSION_DENIED, "not yours");
    ExecutionException ex = assertThrows(ExecutionException.class, () -> pending.get(WAIT.toMillis(), TimeUnit.MILLISECONDS));
    assertEquals(Status.Code.PERMISSION_DENIED, ((PushError) ex.getCause()).code());
  }
}
