package io.pushplat.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.Metadata;
import io.grpc.Status;
import io.pushplat.v1.SendError;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One {@code Push.SendStream} call: many sends without one RPC per message, for high-volume
 * backends. Each request carries a request id of the stream's choosing and is answered with it,
 * in any order. At most {@code window} requests are unanswered at once: {@link #sendAsync} blocks
 * for a free slot first, so a fast producer cannot queue without bound. A refused request fails
 * only its own future (a {@link PushError} with the code a Send of it alone would get); if the
 * stream itself ends, every unanswered send fails with that status and the stream is done: open
 * a new one with {@link PushSender#openStream}. Thread-safe.
 */
public final class SendStream implements AutoCloseable {
  /** How many requests a stream has unanswered at most unless told otherwise. */
  public static final int DEFAULT_WINDOW = 256;

  private final ClientCall<SendRequest, SendResponse> call;
  private final Semaphore slots;
  private final int window;
  private final Map<String, CompletableFuture<SendResponse>> waiting = new ConcurrentHashMap<>();
  private final AtomicLong nextId = new AtomicLong();
  private final CompletableFuture<Void> ready = new CompletableFuture<>();
  private final CompletableFuture<Void> ended = new CompletableFuture<>();
  private volatile PushError failure;
  private volatile boolean closed;

  SendStream(Channel channel, int window) {
    if (window < 1) {
      throw new IllegalArgumentException("window must be at least 1, got " + window);
    }
    this.window = window;
    this.slots = new Semaphore(window);
    this.call = channel.newCall(Rpcs.PUSH_SEND_STREAM, CallOptions.DEFAULT);
    call.start(new ClientCall.Listener<>() {
      @Override
      public void onHeaders(Metadata headers) {
        ready.complete(null); // the api accepted the stream
      }

      @Override
      public void onMessage(SendResponse response) {
        CompletableFuture<SendResponse> answer = waiting.remove(response.getRequestId());
        if (answer != null) {
          if (response.hasError() && response.getError().getCode() != 0) {
            answer.completeExceptionally(errorOf(response.getError()));
          } else {
            answer.complete(response);
          }
        }
        call.request(1);
      }

      @Override
      public void onClose(Status status, Metadata trailers) {
        PushError error = status.isOk()
            ? new PushError(closed ? Status.Code.CANCELLED : Status.Code.UNAVAILABLE,
                closed ? "the stream is closed" : "SendStream ended before every request was answered")
            : PushError.from(status, trailers);
        fail(error);
        ready.complete(null);
        ended.complete(null);
      }
    }, new Metadata());
    call.request(1);
  }

  static PushError errorOf(SendError error) {
    Status.Code code = Status.fromCodeValue(error.getCode()).getCode();
    Duration hint = error.getRetryAfterMs() > 0 ? Duration.ofMillis(error.getRetryAfterMs()) : null;
    if (code == Status.Code.UNAUTHENTICATED) {
      return new AuthError(error.getMessage(), hint, null);
    }
    return new PushError(code, error.getMessage(), hint, null);
  }

  private void fail(PushError error) {
    synchronized (this) {
      if (failure == null) {
        failure = error;
      }
    }
    for (String id : waiting.keySet()) {
      CompletableFuture<SendResponse> answer = waiting.remove(id);
      if (answer != null) {
        answer.completeExceptionally(failure);
      }
    }
  }

  /** The most requests unanswered at once. */
  public int window() {
    return window;
  }

  /** Requests written and not answered yet. */
  public int unanswered() {
    return window - slots.availablePermits();
  }

  /** Sends one message and waits for its answer; throws {@link PushError} if it is refused. */
  public SendResponse send(SendOptions message) {
    try {
      return sendAsync(message).get();
    } catch (ExecutionException e) {
      throw PushError.from(e.getCause());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new PushError(Status.Code.CANCELLED, "interrupted");
    }
  }

  /** Waits for a window slot, writes the message and returns the future of its answer. */
  public CompletableFuture<SendResponse> sendAsync(SendOptions message) {
    return sendAsync(message.toRequest());
  }

  public CompletableFuture<SendResponse> sendAsync(SendRequest request) {
    try {
      slots.acquire();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return CompletableFuture.failedFuture(new PushError(Status.Code.CANCELLED, "interrupted"));
    }
    CompletableFuture<SendResponse> answer = new CompletableFuture<>();
    answer.whenComplete((r, e) -> slots.release());
    ready.join(); // nothing is written before the api accepted (or refused) the stream
    if (closed) {
      answer.completeExceptionally(new PushError(Status.Code.CANCELLED, "the stream is closed"));
      return answer;
    }
    String id = Long.toString(nextId.incrementAndGet());
    waiting.put(id, answer);
    if (failure != null) {
      fail(failure);
      return answer;
    }
    synchronized (call) { // a ClientCall takes one message at a time
      call.sendMessage(request.toBuilder().setRequestId(id).build());
    }
    return answer;
  }

  /** Waits (up to 30 s) for the answers still due, then ends the stream. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    try {
      slots.tryAcquire(window, 30, TimeUnit.SECONDS);
      synchronized (call) {
        call.halfClose();
      }
      ended.get(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      call.cancel("interrupted", e);
    } catch (ExecutionException | TimeoutException | IllegalStateException e) {
      call.cancel("closing", e);
    }
  }
}
