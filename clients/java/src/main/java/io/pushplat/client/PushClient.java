package io.pushplat.client;

import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.pushplat.v1.Ack;
import io.pushplat.v1.ClientFrame;
import io.pushplat.v1.GoAway;
import io.pushplat.v1.Hello;
import io.pushplat.v1.Message;
import io.pushplat.v1.Ping;
import io.pushplat.v1.ServerFrame;
import io.pushplat.v1.Subscribe;
import io.pushplat.v1.SubscriptionResult;
import io.pushplat.v1.Unsubscribe;
import io.pushplat.v1.Welcome;
import java.lang.System.Logger.Level;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * Holds a stream to an edge and hands the application the messages pushed to this device.
 *
 * <pre>{@code
 * try (PushClient client = PushClient.builder("127.0.0.1:50051").token(token).build()) {
 *   while (true) {
 *     Message m = client.receive();          // acked when handed over
 *     System.out.println(m.getMessageId() + " " + m.getPayload().toStringUtf8());
 *   }
 * }
 * }</pre>
 *
 * <p>One background thread owns the connection: it opens a channel, says Hello, reads frames,
 * pings, acks, and reconnects (exponential backoff with full jitter, or the edge's GoAway delay),
 * rotating through the edge addresses it was given. With auto-ack (the default) a message is acked
 * when {@link #receive()} hands it over. A message already seen (by message_id) is acked again if
 * it was acked before, but never handed over twice. UNAUTHENTICATED, INVALID_ARGUMENT,
 * PERMISSION_DENIED and UNIMPLEMENTED stop the client: {@code receive()} throws the {@link
 * PushError}. All methods are thread-safe.
 */
public final class PushClient implements AutoCloseable {
  /** This SDK's version, sent in Hello as {@code pushplat-java/<VERSION>}. */
  public static final String VERSION = "0.1.0";
  /** Used when neither the builder nor the Welcome gives a heartbeat interval. */
  public static final Duration DEFAULT_HEARTBEAT_INTERVAL = Duration.ofSeconds(30);
  /** A connection is dead after this many heartbeat intervals without any frame from the edge. */
  public static final int MISSED_HEARTBEATS = 3;
  /** Acks wait this long for company, so that a burst of messages costs one Ack frame. */
  public static final Duration ACK_LINGER = Duration.ofMillis(10);
  /** The most message ids in one Ack frame; more go in several frames. As many waiting acks go out
   * at once, without the linger. */
  public static final int MAX_ACK_IDS_PER_FRAME = 500;
  /**
   * grpc-java's default receive limit, used until an edge announces larger frames in its Welcome
   * (max_frame_bytes); the client then reconnects at once with a limit to match.
   */
  public static final int DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024;
  /** Bounds the wait for the Welcome after Hello. */
  public static final Duration DEFAULT_CONNECT_TIMEOUT = Duration.ofSeconds(10);
  /** How long {@link #close()} lets the edge end the stream cleanly. */
  public static final Duration DEFAULT_CLOSE_GRACE = Duration.ofSeconds(1);
  /** Messages held for the application before the client stops reading from the edge. */
  public static final int DEFAULT_MAX_BUFFERED = 1_000;

  private static final System.Logger LOG = System.getLogger("io.pushplat.client");
  private static final long NONE = Long.MAX_VALUE;
  private static final long CLEAN_END = -1;
  private static final long CLOSED = -2;
  private static final Object WAKE = new Object();
  private static final ClientFrame PING = ClientFrame.newBuilder().setPing(Ping.getDefaultInstance()).build();

  // Configuration.
  private final List<String> edges;
  private final Hello hello;
  private final String device;
  private final boolean autoAck;
  private final BackoffPolicy backoff;
  private final long heartbeatOverrideNanos; // 0: use the Welcome's
  private final boolean reconnect;
  private final long connectTimeoutNanos;
  private final int maxBuffered;
  private final int maxPendingAcks;
  private final ChannelFactory channelFactory;

  // Ids handed over before (dedup), and ids the application acked: a redelivery of an acked
  // message is acked again; one not yet acked waits for the application's own ack.
  private final RecentIds seen;
  private final RecentIds acked;

  private final ReentrantLock lock = new ReentrantLock();
  private final Condition changed = lock.newCondition(); // a message, a connect, or a stop
  // Guarded by lock.
  private final ArrayDeque<Message> buffer = new ArrayDeque<>();
  private final LinkedHashSet<String> pendingAcks = new LinkedHashSet<>(); // survive reconnects
  private boolean connected;
  private boolean stopped;
  private PushError error;
  private String sessionId = "";
  private String edgeId = "";
  private String edge = "";
  private int connects;
  private GoAway lastGoAway;

  private volatile boolean closing;
  private volatile long closeGraceNanos;
  private volatile boolean readPaused; // the buffer was full: no frame requested from the edge

  // The connection thread's inbox. Bounded in practice: each call has at most one frame
  // requested and one close, and WAKE is queued at most once (wakePending).
  private final LinkedBlockingQueue<Object> events = new LinkedBlockingQueue<>();
  private final AtomicBoolean wakePending = new AtomicBoolean();
  private final Thread thread;
  private int edgeIndex; // connection thread only
  private int receiveLimit = DEFAULT_RECEIVE_LIMIT; // connection thread only

  private record Frame(Session session, ServerFrame frame) {}

  private record Ended(Session session, Status status, Metadata trailers) {}

  /** A Subscribe or Unsubscribe frame for the connection thread to write on the live stream. */
  private record TopicRequest(String id, ClientFrame frame) {}

  /** The most topics the edge takes in one Subscribe/Unsubscribe frame (more ends the stream). */
  public static final int MAX_TOPICS_PER_REQUEST = 100;

  // Subscribe/Unsubscribe calls waiting for the edge's answer, by request_id.
  private final ConcurrentHashMap<String, CompletableFuture<SubscriptionResult>> topicWaiters =
      new ConcurrentHashMap<>();
  private final AtomicLong topicRequests = new AtomicLong();

  /** One connection attempt; touched by the connection thread only. */
  private static final class Session {
    final ManagedChannel channel;
    final String edge;
    ClientCall<ClientFrame, ServerFrame> call;
    boolean ended;
    boolean paused;
    boolean halfClosed;

    Session(ManagedChannel channel, String edge) {
      this.channel = channel;
      this.edge = edge;
    }
  }

  private PushClient(Builder b) {
    this.edges = List.copyOf(b.edges);
    this.edgeIndex = ThreadLocalRandom.current().nextInt(edges.size());
    this.hello =
        Hello.newBuilder()
            .setToken(b.token)
            .setUserId(b.userId)
            .setDeviceId(b.deviceId)
            .setClientVersion(b.clientVersion)
            .build();
    this.device = b.deviceId.isEmpty() ? "-" : b.deviceId;
    this.autoAck = b.autoAck;
    this.backoff = b.backoff != null ? b.backoff : new Backoff();
    this.heartbeatOverrideNanos = b.heartbeatInterval == null ? 0 : b.heartbeatInterval.toNanos();
    this.reconnect = b.reconnect;
    this.connectTimeoutNanos = b.connectTimeout.toNanos();
    this.maxBuffered = b.maxBuffered;
    this.maxPendingAcks = b.dedupCapacity;
    this.channelFactory = b.channelFactory != null ? b.channelFactory : ChannelFactory.forTls(b.tls);
    this.seen = new RecentIds(b.dedupCapacity);
    this.acked = new RecentIds(b.dedupCapacity);
    this.closeGraceNanos = DEFAULT_CLOSE_GRACE.toNanos();
    this.thread = new Thread(this::run, "pushplat-client-" + device);
    this.thread.setDaemon(true);
  }

  /**
   * A client for one edge address ({@code host:port}), or several separated by commas: each
   * connection attempt takes the next, starting at a random one, so a client without a load
   * balancer still moves to another edge when one dies or drains.
   */
  public static Builder builder(String edges) {
    return new Builder(edges == null ? List.of() : Arrays.asList(edges.split(",")));
  }

  /** As {@link #builder(String)}, with the addresses as a list. */
  public static Builder builder(List<String> edges) {
    return new Builder(edges == null ? List.of() : edges);
  }

  // -- public surface ------------------------------------------------------------------------

  /**
   * Waits for the next message and hands it over (acking it, unless auto-ack is off). Messages
   * that arrived before a failure are handed over first.
   *
   * @throws PushError the error that stopped the client ({@link AuthError} for a bad token), or
   *     {@link ClientClosedException} once it is closed
   */
  public Message receive() throws InterruptedException {
    return next(-1);
  }

  /**
   * As {@link #receive()}, but waits at most {@code timeout}.
   *
   * @return the message, or null if none arrived in time
   */
  public Message receive(Duration timeout) throws InterruptedException {
    return next(Math.max(0, timeout.toNanos()));
  }

  /**
   * Acks messages by id. Acks are coalesced and sent within about {@link #ACK_LINGER} on the live
   * stream, or after the next reconnect if there is none. Ignored once the client is closed.
   */
  public void ack(String... messageIds) {
    ack(Arrays.asList(messageIds));
  }

  public void ack(List<String> messageIds) {
    if (closing) {
      LOG.log(Level.DEBUG, () -> "ack ignored: client closed " + fields());
      return;
    }
    recordAcks(messageIds);
  }

  /**
   * Waits until the edge has welcomed the client.
   *
   * @throws TimeoutException if no Welcome came within {@code timeout}
   * @throws PushError the error that stopped the client, or {@link ClientClosedException}
   */
  public void waitConnected(Duration timeout) throws InterruptedException, TimeoutException {
    lock.lockInterruptibly();
    try {
      int start = connects;
      long left = timeout.toNanos();
      while (true) {
        if (error != null) {
          throw error;
        }
        if (closing) {
          throw new ClientClosedException("client is closed");
        }
        // A connect that came and went while we were waking up still counts.
        if (connected || connects > start) {
          return;
        }
        if (stopped) {
          throw new ClientClosedException("the connection ended and reconnect is off");
        }
        if (left <= 0) {
          throw new TimeoutException("no Welcome from " + String.join(",", edges) + " within " + timeout);
        }
        left = changed.awaitNanos(left);
      }
    } finally {
      lock.unlock();
    }
  }

  /** {@link #close(Duration)} with {@link #DEFAULT_CLOSE_GRACE}. */
  @Override
  public void close() {
    close(DEFAULT_CLOSE_GRACE);
  }

  /**
   * Stops the client for good. Pending acks are flushed and the stream half-closed, giving the edge
   * up to {@code grace} to end it; then it is cancelled. Returns once the connection thread has
   * stopped. Calling it again does nothing.
   */
  public void close(Duration grace) {
    boolean first;
    lock.lock();
    try {
      first = !closing;
      if (first) {
        closeGraceNanos = Math.max(0, grace.toNanos());
        closing = true;
        changed.signalAll();
      }
    } finally {
      lock.unlock();
    }
    if (first) {
      wake();
    }
    if (Thread.currentThread() != thread && thread.isAlive()) {
      try {
        thread.join(grace.toMillis() + 5_000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      if (thread.isAlive()) {
        LOG.log(Level.WARNING, () -> "connection thread still running after close " + fields());
      }
    }
    if (first) {
      LOG.log(Level.INFO, () -> "closed " + fields());
    }
  }

  /** The current (or last) session id from the Welcome; "" before the first. */
  public String sessionId() {
    return locked(() -> sessionId);
  }

  /** The current (or last) edge id from the Welcome. */
  public String edgeId() {
    return locked(() -> edgeId);
  }

  /** The address of the current (or last) connection attempt. */
  public String edge() {
    return locked(() -> edge);
  }

  /** How many Welcomes were received (1 + successful reconnects). */
  public int connects() {
    return locked(() -> connects);
  }

  public Optional<GoAway> lastGoAway() {
    return locked(() -> Optional.ofNullable(lastGoAway));
  }

  /** The error that stopped the client, if one did. */
  public Optional<PushError> error() {
    return locked(() -> Optional.ofNullable(error));
  }

  /** Whether a welcomed stream is live. */
  public boolean isConnected() {
    return locked(() -> connected);
  }

  public boolean isClosed() {
    return closing;
  }

  @Override
  public String toString() {
    return "PushClient(edge=" + edge() + ", device=" + device + ", session=" + sessionId() + ", connected=" + isConnected() + ")";
  }

  // -- handing messages over -----------------------------------------------------------------

  private Message next(long timeoutNanos) throws InterruptedException {
    Message m;
    lock.lockInterruptibly();
    try {
      long left = timeoutNanos;
      while (true) {
        if (closing) {
          throw new ClientClosedException("client is closed");
        }
        m = pollUnexpired();
        if (m != null) {
          break;
        }
        if (stopped) {
          throw error != null ? error : new ClientClosedException("client stopped");
        }
        if (timeoutNanos < 0) {
          changed.await();
        } else if (left <= 0) {
          return null;
        } else {
          left = changed.awaitNanos(left);
        }
      }
    } finally {
      lock.unlock();
    }
    if (autoAck && !m.getMessageId().isEmpty()) {
      recordAcks(List.of(m.getMessageId())); // wakes the connection thread
    } else if (readPaused) {
      wake(); // there is room again: read on
    }
    return m;
  }

  /** The next buffered message that has not expired (the README promises none is handed over). */
  private Message pollUnexpired() {
    long nowMs = System.currentTimeMillis();
    Message m;
    while ((m = buffer.poll()) != null) {
      if (m.getExpiresAtMs() <= 0 || m.getExpiresAtMs() > nowMs) {
        return m;
      }
      String id = m.getMessageId();
      LOG.log(Level.DEBUG, () -> "expired message_id=" + id + " " + fields());
    }
    return null;
  }

  // -- connection thread ---------------------------------------------------------------------

  private void run() {
    try {
      while (!closing) {
        long delay;
        try {
          long outcome = session();
          if (closing) {
            return;
          }
          if (!reconnect) {
            stop(new ClientClosedException(
                outcome >= 0 ? "the edge sent GoAway and reconnect is off" : "the edge ended the stream and reconnect is off"));
            return;
          }
          if (outcome >= 0) {
            // A GoAway is planned (deploy, max age), not a failure: use the edge's
            // already-jittered delay and leave the backoff alone.
            delay = outcome;
            LOG.log(Level.INFO, () -> "reconnecting after GoAway in=" + ms(outcome) + " " + fields());
          } else {
            delay = backoff.next().toNanos();
            long d = delay;
            LOG.log(Level.INFO, () -> "stream ended by edge retry_in=" + ms(d) + " " + fields());
          }
        } catch (PushError e) {
          if (closing) {
            return;
          }
          if (!e.isRetriable() || !reconnect) {
            LOG.log(e.isRetriable() ? Level.WARNING : Level.ERROR,
                () -> "stopped code=" + e.code() + " details=\"" + e.details() + "\" " + fields());
            stop(e);
            return;
          }
          delay = backoff.next().toNanos();
          // The server knows its load better than our backoff does.
          delay = Math.max(delay, e.retryAfter().map(Duration::toNanos).orElse(0L));
          long d = delay;
          LOG.log(Level.WARNING,
              () -> "connection lost code=" + e.code() + " details=\"" + e.details() + "\" retry_in=" + ms(d) + " " + fields());
        }
        pause(delay);
      }
    } catch (InterruptedException e) {
      LOG.log(Level.DEBUG, () -> "connection thread interrupted " + fields());
    } catch (RuntimeException | Error e) {
      // A bug in the client, not a network problem: surface it rather than spin.
      LOG.log(Level.ERROR, "client loop crashed " + fields(), e);
      stop(new PushError(Status.Code.UNKNOWN, "client loop crashed: " + e, null, e));
    } finally {
      lock.lock();
      try {
        stopped = true;
        connected = false;
        changed.signalAll();
      } finally {
        lock.unlock();
      }
    }
  }

  private void stop(PushError e) {
    lock.lock();
    try {
      error = e;
      changed.signalAll();
    } finally {
      lock.unlock();
    }
  }

  /** Sleeps between attempts; returns early once closing. */
  private void pause(long nanos) throws InterruptedException {
    long deadline = System.nanoTime() + nanos;
    while (!closing) {
      long left = deadline - System.nanoTime();
      if (left <= 0) {
        return;
      }
      Object e = events.poll(left, TimeUnit.NANOSECONDS);
      if (e == WAKE) {
        wakePending.set(false);
      } else if (e instanceof TopicRequest r) {
        failTopicWaiter(r.id()); // no stream to write it on
      } // events of finished sessions are dropped
    }
  }

  /**
   * One connection. Returns the GoAway delay (nanoseconds, >= 0), CLEAN_END when the edge ended
   * the stream with OK, or CLOSED when the client closed; throws PushError when it failed.
   */
  private long session() throws InterruptedException {
    String address = edges.get(Math.floorMod(edgeIndex++, edges.size()));
    lock.lock();
    try {
      edge = address;
    } finally {
      lock.unlock();
    }
    ManagedChannel channel;
    try {
      // A fresh channel (TCP connection) per attempt: behind a layer-4 load balancer a reused
      // channel would stick to the edge that just told us to go away.
      channel = channelFactory.create(address);
    } catch (RuntimeException e) {
      throw new PushError(Status.Code.INVALID_ARGUMENT, "cannot open a channel to edge \"" + address + "\": " + e.getMessage(), null, e);
    }
    Session s = new Session(channel, address);
    try {
      return converse(s);
    } finally {
      endSession();
      if (s.call != null && !s.ended) {
        s.call.cancel("pushplat client: session over", null);
      }
      channel.shutdownNow();
    }
  }

  private long converse(Session s) throws InterruptedException {
    s.call = s.channel.newCall(Rpcs.EDGE_CONNECT, CallOptions.DEFAULT.withMaxInboundMessageSize(receiveLimit));
    s.call.start(
        new ClientCall.Listener<>() {
          @Override
          public void onMessage(ServerFrame frame) {
            events.add(new Frame(s, frame));
          }

          @Override
          public void onClose(Status status, Metadata trailers) {
            events.add(new Ended(s, status, trailers));
          }
        },
        new Metadata());
    s.call.request(1);
    s.call.sendMessage(ClientFrame.newBuilder().setHello(hello).build());
    LOG.log(Level.DEBUG, () -> "connecting edge=" + s.edge + " " + fields());

    ServerFrame first = null;
    long deadline = System.nanoTime() + connectTimeoutNanos;
    while (first == null) {
      if (closing) {
        return CLOSED;
      }
      long left = deadline - System.nanoTime();
      if (left <= 0) {
        throw new PushError(Status.Code.DEADLINE_EXCEEDED,
            "no Welcome from " + s.edge + " within " + ms(connectTimeoutNanos));
      }
      Object e = events.poll(left, TimeUnit.NANOSECONDS);
      if (e == WAKE) {
        wakePending.set(false);
      } else if (e instanceof Frame f && f.session() == s) {
        first = f.frame();
      } else if (e instanceof Ended end && end.session() == s) {
        return ended(s, end);
      }
    }
    switch (first.getFrameCase()) {
      case GO_AWAY:
        // A draining edge may turn us away before welcoming us; that is still a plan.
        return onGoAway(first.getGoAway());
      case WELCOME:
        break;
      default:
        throw new PushError(Status.Code.INTERNAL, "edge sent " + kind(first) + " before Welcome");
    }
    long interval = onWelcome(first.getWelcome());
    long maxFrame = first.getWelcome().getMaxFrameBytes();
    if (maxFrame > receiveLimit) {
      // Frames this large would fail the stream on this call, and the edge would resend the same
      // frame after every reconnect: reconnect at once with a limit to match.
      receiveLimit = (int) Math.min(maxFrame, Integer.MAX_VALUE);
      LOG.log(Level.INFO,
          () -> "edge frames may be up to " + maxFrame + " bytes; reconnecting with a receive limit to match " + fields());
      return 0;
    }
    s.call.request(1);

    long now = System.nanoTime();
    long lastRx = now;
    long nextPing = now + interval;
    long flushAt = NONE;
    long closeDeadline = NONE;
    while (true) {
      now = System.nanoTime();
      if (closing && !s.halfClosed) {
        flushAcks(s);
        s.call.halfClose();
        s.halfClosed = true;
        closeDeadline = now + closeGraceNanos;
        LOG.log(Level.DEBUG, () -> "half-closed " + fields());
      }
      if (!s.halfClosed) {
        int waiting = pendingAckCount();
        if (waiting >= MAX_ACK_IDS_PER_FRAME) {
          flushAt = now; // linger for company, but no longer than it takes a full frame to gather
        } else if (flushAt == NONE && waiting > 0) {
          flushAt = now + ACK_LINGER.toNanos();
        }
        if (flushAt != NONE && now >= flushAt) {
          flushAcks(s);
          flushAt = NONE;
        }
        if (now >= nextPing) {
          s.call.sendMessage(PING);
          nextPing += interval;
          if (nextPing <= now) { // the thread stalled; do not fire a burst to catch up
            nextPing = now + interval;
          }
        }
      }
      if (s.paused && hasRoom()) {
        s.paused = false;
        readPaused = false;
        lastRx = now; // liveness counts again from now: we were not reading
        s.call.request(1);
      }
      // While paused we do not read, so silence proves nothing; our Pings keep the edge content.
      long deadAt = s.paused ? NONE : lastRx + MISSED_HEARTBEATS * interval;
      long wakeAt = Math.min(Math.min(s.halfClosed ? NONE : nextPing, flushAt), Math.min(deadAt, closeDeadline));
      Object e = events.poll(Math.max(0, wakeAt - now), TimeUnit.NANOSECONDS);
      if (e == null) {
        // Deadlines are judged only with nothing left to read: frames that arrived while this
        // thread was starved of CPU are not the edge's silence.
        now = System.nanoTime();
        if (now >= deadAt) {
          throw new PushError(Status.Code.DEADLINE_EXCEEDED,
              "no frame from the edge for " + ms(MISSED_HEARTBEATS * interval));
        }
        if (now >= closeDeadline) {
          return CLOSED;
        }
        continue;
      }
      if (e == WAKE) {
        wakePending.set(false);
      } else if (e instanceof TopicRequest r) {
        s.call.sendMessage(r.frame());
      } else if (e instanceof Ended end) {
        if (end.session() == s) {
          return ended(s, end);
        }
      } else if (e instanceof Frame f && f.session() == s) {
        lastRx = System.nanoTime();
        ServerFrame frame = f.frame();
        switch (frame.getFrameCase()) {
          case PUSHES:
            onPushes(frame.getPushes().getMessagesList());
            break;
          case GO_AWAY:
            return onGoAway(frame.getGoAway());
          case PONG:
            LOG.log(Level.TRACE, () -> "pong " + fields());
            break;
          case SUBSCRIPTION:
            CompletableFuture<SubscriptionResult> waiter =
                topicWaiters.remove(frame.getSubscription().getRequestId());
            if (waiter != null) {
              waiter.complete(frame.getSubscription());
            }
            break;
          default:
            // A newer edge may send frames we do not know; they still prove liveness.
            LOG.log(Level.DEBUG, () -> "ignored frame kind=" + kind(frame) + " " + fields());
        }
        if (hasRoom()) {
          s.call.request(1);
        } else {
          // Backpressure: the edge's own per-device queue holds the rest until the app reads.
          s.paused = true;
          readPaused = true;
          LOG.log(Level.DEBUG, () -> "buffer full, reading paused max_buffered=" + maxBuffered + " " + fields());
        }
      }
    }
  }

  private long ended(Session s, Ended end) {
    s.ended = true;
    if (end.status().isOk()) {
      return CLEAN_END;
    }
    throw PushError.from(end.status(), end.trailers());
  }

  private long onWelcome(Welcome w) {
    long interval;
    if (heartbeatOverrideNanos > 0) {
      interval = heartbeatOverrideNanos;
    } else if (w.getHeartbeatIntervalMs() > 0) {
      interval = TimeUnit.MILLISECONDS.toNanos(w.getHeartbeatIntervalMs());
    } else {
      interval = DEFAULT_HEARTBEAT_INTERVAL.toNanos();
    }
    int n;
    lock.lock();
    try {
      sessionId = w.getSessionId();
      edgeId = w.getEdgeId();
      connects++;
      connected = true;
      n = connects;
      changed.signalAll();
    } finally {
      lock.unlock();
    }
    backoff.reset();
    LOG.log(Level.INFO, () -> "connected edge=" + w.getEdgeId() + " heartbeat=" + ms(interval) + " connects=" + n + " " + fields());
    return interval;
  }

  private void endSession() {
    failTopicWaiters();
    readPaused = false;
    lock.lock();
    try {
      connected = false;
      changed.signalAll();
    } finally {
      lock.unlock();
    }
  }

  private long onGoAway(GoAway g) {
    lock.lock();
    try {
      lastGoAway = g;
    } finally {
      lock.unlock();
    }
    LOG.log(Level.INFO,
        () -> "go_away reason=" + g.getReason() + " reconnect_after_ms=" + g.getReconnectAfterMs()
            + " detail=\"" + g.getDetail() + "\" " + fields());
    return TimeUnit.MILLISECONDS.toNanos(Math.max(0, g.getReconnectAfterMs()));
  }

  private void onPushes(List<Message> messages) {
    for (Message m : messages) {
      String id = m.getMessageId();
      if (!id.isEmpty() && seen.seen(id)) {
        // Already handed over. Re-ack only if the app acked the original; otherwise its own
        // (pending) ack covers this copy too.
        if (acked.contains(id)) {
          queueAcks(List.of(id));
        }
        LOG.log(Level.DEBUG, () -> "duplicate message_id=" + id + " " + fields());
        continue;
      }
      lock.lock();
      try {
        buffer.add(m);
        changed.signalAll();
      } finally {
        lock.unlock();
      }
    }
    LOG.log(Level.TRACE, () -> "pushes count=" + messages.size() + " " + fields());
  }

  private boolean hasRoom() {
    return locked(() -> buffer.size() < maxBuffered);
  }

  // -- acks ----------------------------------------------------------------------------------

  private void recordAcks(List<String> ids) {
    List<String> kept = new ArrayList<>(ids.size());
    for (String id : ids) {
      if (id != null && !id.isEmpty()) {
        acked.add(id);
        kept.add(id);
      }
    }
    queueAcks(kept);
  }

  private void queueAcks(List<String> ids) {
    if (ids.isEmpty()) {
      return;
    }
    int dropped = 0;
    lock.lock();
    try {
      pendingAcks.addAll(ids);
      // Bounded while disconnected: a dropped ack costs a redelivery, which is acked again
      // because the id is still in `acked`.
      Iterator<String> it = pendingAcks.iterator();
      while (pendingAcks.size() > maxPendingAcks && it.hasNext()) {
        it.next();
        it.remove();
        dropped++;
      }
    } finally {
      lock.unlock();
    }
    if (dropped > 0) {
      int n = dropped;
      LOG.log(Level.DEBUG, () -> "pending acks over " + maxPendingAcks + ", dropped the oldest " + n + " " + fields());
    }
    wake();
  }

  private int pendingAckCount() {
    return locked(pendingAcks::size);
  }

  private void flushAcks(Session s) {
    List<String> ids;
    lock.lock();
    try {
      if (pendingAcks.isEmpty()) {
        return;
      }
      ids = new ArrayList<>(pendingAcks);
      pendingAcks.clear();
    } finally {
      lock.unlock();
    }
    // A lost Ack frame heals itself: the edge replays the message, and `acked` re-acks it.
    for (int i = 0; i < ids.size(); i += MAX_ACK_IDS_PER_FRAME) {
      List<String> chunk = ids.subList(i, Math.min(ids.size(), i + MAX_ACK_IDS_PER_FRAME));
      s.call.sendMessage(ClientFrame.newBuilder().setAck(Ack.newBuilder().addAllMessageIds(chunk)).build());
    }
    LOG.log(Level.TRACE, () -> "acked count=" + ids.size() + " " + fields());
  }

  /**
   * Subscribes this device to topics (at most {@link #MAX_TOPICS_PER_REQUEST}). Subscriptions
   * belong to the device: the edge keeps them across reconnects, on any edge. Waits for a
   * connection first, then for the edge's answer: the applied topics, and the refused ones each
   * with a gRPC status code and a message (a bad name, the device's topic limit, the store down,
   * too many changes a second). Throws PushError(UNAVAILABLE) if the stream ends before the answer
   * (retrying is safe: subscribing is idempotent), TimeoutException past the timeout.
   */
  public SubscriptionResult subscribe(Duration timeout, String... topics)
      throws InterruptedException, TimeoutException {
    return changeTopics(true, timeout, topics);
  }

  /** The reverse of {@link #subscribe(Duration, String...)}. */
  public SubscriptionResult unsubscribe(Duration timeout, String... topics)
      throws InterruptedException, TimeoutException {
    return changeTopics(false, timeout, topics);
  }

  private SubscriptionResult changeTopics(boolean subscribe, Duration timeout, String... topics)
      throws InterruptedException, TimeoutException {
    if (topics.length == 0 || topics.length > MAX_TOPICS_PER_REQUEST) {
      throw new IllegalArgumentException(
          "give 1 to " + MAX_TOPICS_PER_REQUEST + " topics per call, got " + topics.length);
    }
    long deadline = System.nanoTime() + timeout.toNanos();
    waitConnected(timeout);
    String id = Long.toString(topicRequests.incrementAndGet());
    List<String> names = Arrays.asList(topics);
    ClientFrame frame =
        subscribe
            ? ClientFrame.newBuilder()
                .setSubscribe(Subscribe.newBuilder().addAllTopics(names).setRequestId(id))
                .build()
            : ClientFrame.newBuilder()
                .setUnsubscribe(Unsubscribe.newBuilder().addAllTopics(names).setRequestId(id))
                .build();
    CompletableFuture<SubscriptionResult> waiter = new CompletableFuture<>();
    topicWaiters.put(id, waiter);
    events.add(new TopicRequest(id, frame));
    try {
      return waiter.get(Math.max(0, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
    } catch (ExecutionException e) {
      throw (PushError) e.getCause();
    } finally {
      topicWaiters.remove(id);
    }
  }

  private void failTopicWaiter(String id) {
    CompletableFuture<SubscriptionResult> waiter = topicWaiters.remove(id);
    if (waiter != null) {
      waiter.completeExceptionally(
          new PushError(Status.Code.UNAVAILABLE, "not connected to an edge; retry", null, null));
    }
  }

  private void failTopicWaiters() {
    for (String id : List.copyOf(topicWaiters.keySet())) {
      failTopicWaiter(id);
    }
  }

  private void wake() {
    if (wakePending.compareAndSet(false, true)) {
      events.add(WAKE);
    }
  }

  // -- helpers -------------------------------------------------------------------------------

  private <T> T locked(java.util.function.Supplier<T> read) {
    lock.lock();
    try {
      return read.get();
    } finally {
      lock.unlock();
    }
  }

  private String fields() {
    String session = locked(() -> sessionId);
    return "device=" + device + " session=" + (session.isEmpty() ? "-" : session);
  }

  private static String ms(long nanos) {
    return TimeUnit.NANOSECONDS.toMillis(nanos) + "ms";
  }

  private static String kind(ServerFrame f) {
    switch (f.getFrameCase()) {
      case FRAME_NOT_SET:
        return "an empty frame";
      case WELCOME:
        return "welcome";
      case PUSHES:
        return "pushes";
      case GO_AWAY:
        return "go_away";
      case PONG:
        return "pong";
      default:
        return "an unknown frame";
    }
  }

  /** Options of a {@link PushClient}. Give a token, or (auth off) a device id and user id. */
  public static final class Builder {
    private final List<String> edges = new ArrayList<>();
    private String token = "";
    private String userId = "";
    private String deviceId = "";
    private String clientVersion = "pushplat-java/" + VERSION;
    private boolean autoAck = true;
    private int dedupCapacity = RecentIds.DEFAULT_CAPACITY;
    private int maxBuffered = DEFAULT_MAX_BUFFERED;
    private BackoffPolicy backoff;
    private Duration heartbeatInterval;
    private boolean reconnect = true;
    private Duration connectTimeout = DEFAULT_CONNECT_TIMEOUT;
    private Tls tls;
    private ChannelFactory channelFactory;

    private Builder(List<String> addresses) {
      for (String a : addresses) {
        if (a != null && !a.isBlank()) {
          edges.add(a.trim());
        }
      }
    }

    /** The device token (an HS256 JWT from {@code pushplat token}). */
    public Builder token(String token) {
      this.token = token == null ? "" : token;
      return this;
    }

    /** Honoured by the edge only when auth is off. */
    public Builder userId(String userId) {
      this.userId = userId == null ? "" : userId;
      return this;
    }

    /** Honoured by the edge only when auth is off. */
    public Builder deviceId(String deviceId) {
      this.deviceId = deviceId == null ? "" : deviceId;
      return this;
    }

    /** Sent in Hello; default {@code pushplat-java/<VERSION>}. */
    public Builder clientVersion(String clientVersion) {
      this.clientVersion = Objects.requireNonNull(clientVersion, "clientVersion");
      return this;
    }

    /** Ack each message when receive() hands it over (default true); else call ack() yourself. */
    public Builder autoAck(boolean autoAck) {
      this.autoAck = autoAck;
      return this;
    }

    /** How many message ids to remember for dedup (default 10,000); also bounds pending acks. */
    public Builder dedupCapacity(int capacity) {
      this.dedupCapacity = capacity;
      return this;
    }

    /**
     * How many messages to hold for the application (default 1,000). When the buffer is full the
     * client stops reading from the edge until the application catches up; one frame may overshoot.
     */
    public Builder maxBuffered(int messages) {
      this.maxBuffered = messages;
      return this;
    }

    /** Spaces out reconnects after failures; default {@code new Backoff()} (200 ms to 30 s). */
    public Builder backoff(BackoffPolicy backoff) {
      this.backoff = Objects.requireNonNull(backoff, "backoff");
      return this;
    }

    /** Overrides the Welcome's heartbeat_interval_ms. */
    public Builder heartbeatInterval(Duration interval) {
      this.heartbeatInterval = interval;
      return this;
    }

    /** Reconnect after a lost connection (default true). */
    public Builder reconnect(boolean reconnect) {
      this.reconnect = reconnect;
      return this;
    }

    /** Bounds the wait for the Welcome after Hello (default 10 s). */
    public Builder connectTimeout(Duration timeout) {
      this.connectTimeout = timeout;
      return this;
    }

    /** TLS settings; default plaintext. */
    public Builder tls(Tls tls) {
      this.tls = tls;
      return this;
    }

    /** Opens each attempt's channel instead of the default (which honours {@link #tls}). */
    public Builder channelFactory(ChannelFactory factory) {
      this.channelFactory = Objects.requireNonNull(factory, "channelFactory");
      return this;
    }

    /**
     * Validates the options and starts connecting in the background; it does not wait for the
     * connection (see {@link PushClient#waitConnected}).
     *
     * @throws IllegalArgumentException for missing or out-of-range options
     */
    public PushClient build() {
      if (edges.isEmpty()) {
        throw new IllegalArgumentException("PushClient needs the edge address, e.g. \"127.0.0.1:50051\"");
      }
      if (token.isEmpty() && deviceId.isEmpty()) {
        throw new IllegalArgumentException(
            "PushClient needs a token, or a deviceId (with userId) when the edge runs without auth");
      }
      if (heartbeatInterval != null) {
        Checks.positive(heartbeatInterval, "heartbeatInterval");
      }
      Checks.positive(connectTimeout, "connectTimeout");
      if (dedupCapacity < 1) {
        throw new IllegalArgumentException("dedupCapacity must be >= 1, got " + dedupCapacity);
      }
      if (maxBuffered < 1) {
        throw new IllegalArgumentException("maxBuffered must be >= 1, got " + maxBuffered);
      }
      PushClient client = new PushClient(this);
      client.thread.start();
      return client;
    }
  }
}
