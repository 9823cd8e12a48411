package io.pushplat.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.pushplat.v1.SendError;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** SendStream against an in-process Push service that answers (or holds its answers) as told. */
class SendStreamTest {
  private final List<SendRequest> received = new CopyOnWriteArrayList<>();
  private final List<SendRequest> held = new ArrayList<>();
  private volatile boolean holding;
  private volatile Status failWith;
  private ServerCall<SendRequest, SendResponse> current;
  private String name;
  private Server server;

  @BeforeEach
  void startServer() throws Exception {
    name = "fake-stream-" + UUID.randomUUID();
    ServerServiceDefinition push = ServerServiceDefinition.builder("pushplat.v1.Push")
        .addMethod(Rpcs.PUSH_SEND_STREAM, (ServerCall<SendRequest, SendResponse> call, Metadata headers) -> {
          if (failWith != null) {
            call.close(failWith, new Metadata());
            return new ServerCall.Listener<SendRequest>() {};
          }
          final ServerCall<SendRequest, SendResponse> stream = call;
          current = stream;
          stream.sendHeaders(new Metadata()); // as the api does once it accepted the stream
          stream.request(1);
          return new ServerCall.Listener<SendRequest>() {
            @Override
            public void onMessage(SendRequest request) {
              received.add(request);
              synchronized (SendStreamTest.this) {
                if (holding) {
                  held.add(request);
                } else {
                  answer(stream, request);
                }
              }
              stream.request(1);
            }

            @Override
            public void onHalfClose() {
              synchronized (SendStreamTest.this) {
                stream.close(Status.OK, new Metadata());
              }
            }
          };
        })
        .build();
    server = InProcessServerBuilder.forName(name).addService(push).build().start();
  }

  private static void answer(ServerCall<SendRequest, SendResponse> call, SendRequest request) {
    SendResponse.Builder r = SendResponse.newBuilder().setRequestId(request.getRequestId());
    if (request.getPayload().toStringUtf8().equals("refuse")) {
      r.setError(SendError.newBuilder().setCode(Status.Code.INVALID_ARGUMENT.value()).setMessage("refused"));
    } else {
      r.setMessageId("m-" + request.getRequestId());
    }
    call.sendMessage(r.build());
  }

  private synchronized void release() {
    holding = false;
    for (SendRequest request : held) {
      answer(current, request);
    }
    held.clear();
  }

  @AfterEach
  void stopServer() throws Exception {
    server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }

  private PushSender sender() {
    return PushSender.builder(name).channelFactory(a -> InProcessChannelBuilder.forName(a).build()).build();
  }

  @Test
  void answersAreMatchedToTheirSends() throws Exception {
    try (PushSender s = sender(); SendStream stream = s.openStream(8)) {
      List<CompletableFuture<SendResponse>> answers = new ArrayList<>();
      for (int i = 0; i < 40; i++) {
        answers.add(stream.sendAsync(SendOptions.toDevice("d").payload("p" + i)));
      }
      Set<String> ids = new HashSet<>();
      for (CompletableFuture<SendResponse> a : answers) {
        SendResponse r = a.get(5, TimeUnit.SECONDS);
        assertEquals("m-" + r.getRequestId(), r.getMessageId());
        ids.add(r.getRequestId());
      }
      assertEquals(40, ids.size());
    }
    assertEquals(40, received.size());
  }

  @Test
  void theWindowBoundsUnansweredRequests() throws Exception {
    holding = true;
    try (PushSender s = sender(); SendStream stream = s.openStream(3)) {
      List<CompletableFuture<SendResponse>> answers = new CopyOnWriteArrayList<>();
      Thread producer = new Thread(() -> {
        for (int i = 0; i < 10; i++) {
          answers.add(stream.sendAsync(SendOptions.toDevice("d").payload("x")));
        }
      });
      producer.start();
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
      while (received.size() < 3 && System.nanoTime() < deadline) {
        Thread.sleep(5);
      }
      assertEquals(3, received.size());
      assertEquals(3, stream.unanswered());
      assertTrue(producer.isAlive(), "the producer is blocked on the window");
      release();
      producer.join(5_000);
      assertFalse(producer.isAlive());
      for (CompletableFuture<SendResponse> a : answers) {
        assertTrue(a.get(5, TimeUnit.SECONDS).getMessageId().startsWith("m-"));
      }
    }
    assertEquals(10, received.size());
  }

  @Test
  void aRefusedItemFailsOnlyItsOwnSend() {
    try (PushSender s = sender(); SendStream stream = s.openStream()) {
      PushError e = assertThrows(PushError.class, () -> stream.send(SendOptions.toDevice("d").payload("refuse")));
      assertEquals(Status.Code.INVALID_ARGUMENT, e.code());
      assertEquals("refused", e.details());
      assertFalse(e.isRetriable());
      assertTrue(stream.send(SendOptions.toDevice("d").payload("after")).getMessageId().startsWith("m-"));
    }
  }

  @Test
  void aRefusedStreamFailsEverySend() {
    failWith = Status.UNAUTHENTICATED.withDescription("unknown API key");
    try (PushSender s = sender(); SendStream stream = s.openStream()) {
      PushError e = assertThrows(PushError.class, () -> stream.send(SendOptions.toDevice("d").payload("x")));
      assertInstanceOf(AuthError.class, e);
      assertThrows(AuthError.class, () -> stream.send(SendOptions.toDevice("d").payload("y")));
    }
    try (PushSender s = sender()) {
      assertThrows(IllegalArgumentException.class, () -> s.openStream(0));
    }
  }
}
