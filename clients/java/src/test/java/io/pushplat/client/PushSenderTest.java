package io.pushplat.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Deadline;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import io.pushplat.v1.DeliveryMode;
import io.pushplat.v1.DeliveryState;
import io.pushplat.v1.GetPresenceResponse;
import io.pushplat.v1.GetStatusResponse;
import io.pushplat.v1.PresenceDevice;
import io.pushplat.v1.Priority;
import io.pushplat.v1.SendBatchResponse;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The sender against an in-process Push service that records what it gets. */
class PushSenderTest {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final List<SendRequest> received = new CopyOnWriteArrayList<>();
  private final List<String> authorizations = new CopyOnWriteArrayList<>();
  private final List<Deadline> deadlines = new CopyOnWriteArrayList<>();
  private volatile Status failWith;
  private volatile Metadata failTrailers;
  private String name;
  private Server server;

  @BeforeEach
  void startServer() throws Exception {
    name = "fake-api-" + UUID.randomUUID();
    ServerServiceDefinition push = ServerServiceDefinition.builder("pushplat.v1.Push")
        .addMethod(Rpcs.PUSH_SEND, ServerCalls.asyncUnaryCall((SendRequest r, StreamObserver<SendResponse> out) -> {
          if (fail(out)) {
            return;
          }
          received.add(r);
          out.onNext(SendResponse.newBuilder().setMessageId("id-" + received.size()).build());
          out.onCompleted();
        }))
        .addMethod(Rpcs.PUSH_SEND_BATCH, ServerCalls.asyncUnaryCall((batch, out) -> {
          if (fail(out)) {
            return;
          }
          SendBatchResponse.Builder b = SendBatchResponse.newBuilder();
          for (SendRequest r : batch.getRequestsList()) {
            received.add(r);
            b.addResponses(SendResponse.newBuilder().setMessageId("id-" + r.getPayload().toStringUtf8()));
          }
          out.onNext(b.build());
          out.onCompleted();
        }))
        .addMethod(Rpcs.PUSH_GET_STATUS, ServerCalls.asyncUnaryCall((req, out) -> {
          if (fail(out)) {
            return;
          }
          out.onNext(GetStatusResponse.newBuilder().setMessageId(req.getMessageId()).setState(DeliveryState.DELIVERY_STATE_ACKED).build());
          out.onCompleted();
        }))
        .addMethod(Rpcs.PUSH_GET_PRESENCE, ServerCalls.asyncUnaryCall((req, out) -> {
          if (fail(out)) {
            return;
          }
          out.onNext(GetPresenceResponse.newBuilder().setUserId(req.getUserId())
              .addDevices(PresenceDevice.newBuilder().setDeviceId("phone").setEdgeId("e1")).build());
          out.onCompleted();
        }))
        .build();
    ServerInterceptor record = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        String auth = headers.get(AUTHORIZATION);
        authorizations.add(auth == null ? "<none>" : auth);
        Deadline d = Context.current().getDeadline();
        if (d != null) {
          deadlines.add(d);
        }
        return Contexts.interceptCall(Context.current(), call, headers, next);
      }
    };
    server = InProcessServerBuilder.forName(name).addService(ServerInterceptors.intercept(push, record)).build().start();
  }

  private boolean fail(StreamObserver<?> out) {
    if (failWith == null) {
      return false;
    }
    out.onError(failWith.asRuntimeException(failTrailers));
    return true;
  }

  @AfterEach
  void stopServer() throws Exception {
    server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }

  private PushSender sender(String apiKey) {
    return PushSender.builder(name).apiKey(apiKey).channelFactory(a -> InProcessChannelBuilder.forName(a).build()).build();
  }

  @Test
  void sendBuildsTheRequestAndReturnsTheResponse() {
    try (PushSender s = sender(null)) {
      SendResponse r = s.send(SendOptions.toUser("alice").payload("hi").contentType("text/plain").priority("high")
          .ttlSeconds(60).collapseKey("score").idempotencyKey("k1").atLeastOnce(true).label("variant", "b"));
      assertEquals("id-1", r.getMessageId());
      assertFalse(r.getDuplicate());
    }
    SendRequest req = received.get(0);
    assertEquals(SendRequest.TargetCase.USER_ID, req.getTargetCase());
    assertEquals("alice", req.getUserId());
    assertEquals("hi", req.getPayload().toStringUtf8());
    assertEquals("text/plain", req.getContentType());
    assertEquals(Priority.PRIORITY_HIGH, req.getPriority());
    assertEquals(60, req.getTtlSeconds());
    assertEquals("score", req.getCollapseKey());
    assertEquals("k1", req.getIdempotencyKey());
    assertEquals(DeliveryMode.AT_LEAST_ONCE, req.getDelivery());
    assertEquals(Map.of("variant", "b"), req.getLabelsMap());
  }

  @Test
  void sendToADeviceWithDefaults() {
    try (PushSender s = sender(null)) {
      s.send(SendOptions.toDevice("phone").payload(new byte[] {0, (byte) 0xff}));
    }
    SendRequest req = received.get(0);
    assertEquals("phone", req.getDeviceId());
    assertEquals(Priority.PRIORITY_NORMAL, req.getPriority());
    assertEquals(DeliveryMode.AT_MOST_ONCE, req.getDelivery());
    assertEquals(0, req.getTtlSeconds());
    assertEquals(2, req.getPayload().size());
  }

  @Test
  void apiKeyIsSentAsBearerMetadataAndNothingWithoutOne() {
    try (PushSender s = sender("K1")) {
      s.send(SendOptions.toUser("u").payload("x"));
      s.getStatus("m");
    }
    try (PushSender s = sender(null)) {
      s.send(SendOptions.toUser("u").payload("x"));
    }
    assertEquals(List.of("Bearer K1", "Bearer K1", "<none>"), authorizations);
  }

  @Test
  void everyCallCarriesADeadline() {
    try (PushSender s = PushSender.builder(name).timeout(Duration.ofSeconds(3))
        .channelFactory(a -> InProcessChannelBuilder.forName(a).build()).build()) {
      s.send(SendOptions.toUser("u").payload("x"));
    }
    long left = deadlines.get(0).timeRemaining(TimeUnit.MILLISECONDS);
    assertTrue(left > 0 && left <= 3_000, "deadline " + left + " ms");
  }

  @Test
  void sendBatchKeepsOrder() {
    try (PushSender s = sender(null)) {
      List<SendResponse> rs = s.sendBatch(List.of(
          SendOptions.toUser("a").payload("1"), SendOptions.toDevice("b").payload("2"), SendOptions.toUser("c").payload("3")));
      assertEquals(List.of("id-1", "id-2", "id-3"), rs.stream().map(SendResponse::getMessageId).toList());
    }
    assertEquals(List.of("a", "b", "c"),
        received.stream().map(r -> r.hasUserId() ? r.getUserId() : r.getDeviceId()).toList());
  }

  @Test
  void statusAndPresence() {
    try (PushSender s = sender(null)) {
      GetStatusResponse st = s.getStatus("m-7");
      assertEquals("m-7", st.getMessageId());
      assertEquals(DeliveryState.DELIVERY_STATE_ACKED, st.getState());
      GetPresenceResponse p = s.getPresence("alice");
      assertEquals("alice", p.getUserId());
      assertEquals("phone", p.getDevices(0).getDeviceId());
    }
  }

  @Test
  void grpcErrorsBecomePushErrors() {
    try (PushSender s = sender("wrong")) {
      failWith = Status.UNAUTHENTICATED.withDescription("unknown API key");
      PushError auth = assertThrows(PushError.class, () -> s.send(SendOptions.toUser("u").payload("x")));
      assertInstanceOf(AuthError.class, auth);
      assertEquals("unknown API key", auth.details());
      assertFalse(auth.isRetriable());

      failWith = Status.INVALID_ARGUMENT.withDescription("ttl_seconds must be at most 2419200");
      PushError bad = assertThrows(PushError.class, () -> s.sendBatch(List.of(SendOptions.toUser("u").payload("x"))));
      assertEquals(Status.Code.INVALID_ARGUMENT, bad.code());
      assertFalse(bad instanceof AuthError);
      assertTrue(bad.getMessage().contains("ttl_seconds"), bad.getMessage());

      failWith = Status.NOT_FOUND.withDescription("no such message");
      assertEquals(Status.Code.NOT_FOUND, assertThrows(PushError.class, () -> s.getStatus("nope")).code());

      failWith = Status.UNAVAILABLE.withDescription("queue down");
      PushError down = assertThrows(PushError.class, () -> s.getPresence("u"));
      assertTrue(down.isRetriable());
      assertTrue(down.retryAfter().isEmpty());
    }
  }

  @Test
  void rateLimitCarriesTheRetryHint() {
    failWith = Status.RESOURCE_EXHAUSTED.withDescription("slow down");
    failTrailers = new Metadata();
    failTrailers.put(PushError.RETRY_AFTER, "250");
    try (PushSender s = sender(null)) {
      PushError e = assertThrows(PushError.class, () -> s.send(SendOptions.toUser("u").payload("x")));
      assertEquals(Duration.ofMillis(250), e.retryAfter().orElseThrow());
    }
  }

  @Test
  void theTargetIsCheckedBeforeSending() {
    try (PushSender s = sender(null)) {
      assertThrows(IllegalArgumentException.class, () -> s.send(SendOptions.toUser("").payload("x")));
      assertThrows(IllegalArgumentException.class, () -> s.send(SendOptions.toDevice("").payload("x")));
      assertThrows(IllegalArgumentException.class, () -> SendOptions.toUser("u").priority("urgent"));
      assertThrows(IllegalArgumentException.class, () -> SendOptions.toUser("u").ttlSeconds(-1));
    }
    assertTrue(received.isEmpty());
    assertTrue(authorizations.isEmpty(), "a call went out");
  }

  @Test
  void builderChecksItsOptions() {
    assertThrows(IllegalArgumentException.class, () -> PushSender.builder(""));
    assertThrows(IllegalArgumentException.class, () -> PushSender.builder("h:1").timeout(Duration.ZERO));
    try (PushSender s = PushSender.builder("127.0.0.1:1").apiKey("secret").build()) {
      assertEquals("PushSender(api=127.0.0.1:1, api_key=set)", s.toString(), "the key itself is never shown");
    }
  }
}
