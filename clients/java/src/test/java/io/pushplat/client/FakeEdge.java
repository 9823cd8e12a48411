package io.pushplat.client;

import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.fail;

import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import io.pushplat.v1.Ack;
import io.pushplat.v1.ClientFrame;
import io.pushplat.v1.GoAway;
import io.pushplat.v1.Hello;
import io.pushplat.v1.Message;
import io.pushplat.v1.Pong;
import io.pushplat.v1.PushBatch;
import io.pushplat.v1.ServerFrame;
import io.pushplat.v1.Welcome;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

/** A scriptable Edge server, driven by the test by hand, on grpc-java's in-process transport. */
final class FakeEdge implements AutoCloseable {
  /** The upper bound for any single expected event; tests normally take milliseconds. */
  static final Duration WAIT = Duration.ofSeconds(5);

  final String name;
  private final Server server;
  private final BlockingQueue<Conn> conns = new LinkedBlockingQueue<>();
  private final List<Conn> all = new CopyOnWriteArrayList<>();
  volatile boolean endOnHalfClose = true;

  private FakeEdge(String name, ServerBuilder<?> builder) throws IOException {
    this.name = name;
    this.server = builder.addService(service()).build().start();
  }

  /** A fake edge on the in-process transport; {@link #channels()} reaches it by {@link #name}. */
  static FakeEdge inProcess() throws IOException {
    String name = "fake-edge-" + UUID.randomUUID();
    return new FakeEdge(name, InProcessServerBuilder.forName(name));
  }

  /** A fake edge on a server builder of the caller's (e.g. a TLS port on loopback). */
  static FakeEdge on(ServerBuilder<?> builder) throws IOException {
    return new FakeEdge("", builder);
  }

  int port() {
    return server.getPort();
  }

  /** Channels to in-process fake edges, by name. */
  static ChannelFactory channels() {
    return address -> InProcessChannelBuilder.forName(address).build();
  }

  private ServerServiceDefinition service() {
    return ServerServiceDefinition.builder("pushplat.v1.Edge")
        .addMethod(Rpcs.EDGE_CONNECT, ServerCalls.asyncBidiStreamingCall(this::connect))
        .build();
  }

  private StreamObserver<ClientFrame> connect(StreamObserver<ServerFrame> out) {
    return new Conn((ServerCallStreamObserver<ServerFrame>) out);
  }

  Conn nextConn() throws InterruptedException {
    Conn c = conns.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
    assertNotNull(c, "timed out waiting for a connection");
    return c;
  }

  /** The next connection within d, or null. */
  Conn pollConn(Duration d) throws InterruptedException {
    return conns.poll(d.toMillis(), TimeUnit.MILLISECONDS);
  }

  List<Conn> connections() {
    return List.copyOf(all);
  }

  @Override
  public void close() {
    for (Conn c : all) {
      c.end();
    }
    server.shutdownNow();
    try {
      server.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  static Message msg(String id) {
    return Message.newBuilder().setMessageId(id).setPayload(com.google.protobuf.ByteString.copyFromUtf8("x")).build();
  }

  /** Waits for a condition, up to WAIT. */
  static void eventually(BooleanSupplier condition, String what) throws InterruptedException {
    long deadline = System.nanoTime() + WAIT.toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        fail("timed out waiting for " + what);
      }
      Thread.sleep(2);
    }
  }

  /** The server's view of one Connect stream. */
  final class Conn implements StreamObserver<ClientFrame> {
    private final ServerCallStreamObserver<ServerFrame> out;
    volatile Hello hello;
    volatile long helloAtNanos;
    final BlockingQueue<Ack> acks = new LinkedBlockingQueue<>();
    final BlockingQueue<Long> pings = new LinkedBlockingQueue<>();
    final BlockingQueue<ClientFrame> topicFrames = new LinkedBlockingQueue<>();
    final List<String> acked = new CopyOnWriteArrayList<>();
    final CountDownLatch halfClosed = new CountDownLatch(1);
    final CountDownLatch gone = new CountDownLatch(1);
    volatile boolean autoPong = true;
    private boolean finished;

    Conn(ServerCallStreamObserver<ServerFrame> out) {
      this.out = out;
      out.setOnCancelHandler(gone::countDown);
    }

    @Override
    public void onNext(ClientFrame f) {
      if (hello == null) {
        hello = f.getHello();
        helloAtNanos = System.nanoTime();
        all.add(this);
        conns.add(this);
        return;
      }
      switch (f.getFrameCase()) {
        case ACK:
          acked.addAll(f.getAck().getMessageIdsList());
          acks.add(f.getAck());
          break;
        case PING:
          if (autoPong) {
            send(ServerFrame.newBuilder().setPong(Pong.getDefaultInstance()).build());
          }
          pings.add(System.nanoTime());
          break;
        case SUBSCRIBE:
        case UNSUBSCRIBE:
          topicFrames.add(f);
          break;
        default:
          break;
      }
    }

    @Override
    public void onError(Throwable t) {
      gone.countDown();
    }

    @Override
    public void onCompleted() {
      halfClosed.countDown();
      if (endOnHalfClose) {
        end();
      }
    }

    synchronized void send(ServerFrame f) {
      if (!finished) {
        out.onNext(f);
      }
    }

    /** Whether the client has asked for more frames (it stops asking when its buffer is full). */
    boolean clientReading() {
      return out.isReady();
    }

    void welcome(String sessionId, long heartbeatMs) {
      send(ServerFrame.newBuilder()
          .setWelcome(Welcome.newBuilder().setSessionId(sessionId).setEdgeId("edge-test").setHeartbeatIntervalMs(heartbeatMs))
          .build());
    }

    void push(Message... messages) {
      send(ServerFrame.newBuilder().setPushes(PushBatch.newBuilder().addAllMessages(Arrays.asList(messages))).build());
    }

    void goAway(long reconnectAfterMs, GoAway.Reason reason) {
      send(ServerFrame.newBuilder()
          .setGoAway(GoAway.newBuilder().setReason(reason).setReconnectAfterMs(reconnectAfterMs).setDetail("test"))
          .build());
    }

    /** Ends the stream with OK. */
    synchronized void end() {
      if (!finished) {
        finished = true;
        out.onCompleted();
        gone.countDown();
      }
    }

    /** Ends the stream with a status, and trailing metadata given as key, value pairs. */
    synchronized void abort(Status.Code code, String message, String... trailer) {
      if (!finished) {
        finished = true;
        Metadata md = new Metadata();
        for (int i = 0; i + 1 < trailer.length; i += 2) {
          md.put(Metadata.Key.of(trailer[i], Metadata.ASCII_STRING_MARSHALLER), trailer[i + 1]);
        }
        out.onError(Status.fromCode(code).withDescription(message).asRuntimeException(md));
        gone.countDown();
      }
    }

    Ack nextAck() throws InterruptedException {
      Ack a = acks.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
      assertNotNull(a, "timed out waiting for an Ack frame");
      return a;
    }

    long nextPing() throws InterruptedException {
      Long at = pings.poll(WAIT.toMillis(), TimeUnit.MILLISECONDS);
      assertNotNull(at, "timed out waiting for a Ping frame");
      return at;
    }

    /** Collects Ack frames until every id has been acked; returns the frames. */
    List<Ack> acksUntil(String... ids) throws InterruptedException {
      List<Ack> frames = new ArrayList<>();
      long deadline = System.nanoTime() + WAIT.toNanos();
      while (!new HashSet<>(acked).containsAll(Set.of(ids))) {
        Ack a = acks.poll(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
        if (a == null) {
          fail("timed out waiting for acks of " + Arrays.toString(ids) + " (got " + acked + ")");
        }
        frames.add(a);
      }
      return frames;
    }

    void waitGone() throws InterruptedException {
      if (!gone.await(WAIT.toMillis(), TimeUnit.MILLISECONDS)) {
        fail("timed out waiting for the stream to end");
      }
    }

    boolean isGone() {
      return gone.getCount() == 0;
    }
  }
}
