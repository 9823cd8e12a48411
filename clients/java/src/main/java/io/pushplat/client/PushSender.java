package io.pushplat.client;

import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientInterceptors;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import io.pushplat.v1.GetPresenceRequest;
import io.pushplat.v1.GetPresenceResponse;
import io.pushplat.v1.GetStatusRequest;
import io.pushplat.v1.GetStatusResponse;
import io.pushplat.v1.GetSubscriptionsRequest;
import io.pushplat.v1.SubscribeRequest;
import io.pushplat.v1.SubscribeResponse;
import io.pushplat.v1.SendBatchRequest;
import io.pushplat.v1.SendRequest;
import io.pushplat.v1.SendResponse;
import java.time.Duration;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.TimeUnit;

/**
 * Sends messages through the api's {@code Push} service.
 *
 * <pre>{@code
 * try (PushSender sender = PushSender.builder("127.0.0.1:50052").apiKey(key).build()) {
 *   SendResponse r = sender.send(SendOptions.toUser("alice").payload("hi").priority("high"));
 * }
 * }</pre>
 *
 * <p>A send returns once the message is enqueued (fire-and-forget). Failures throw {@link
 * PushError} ({@link AuthError} for a bad key). The sender does not retry, since only the caller
 * knows whether a retry is safe (an idempotency key makes it so). Thread-safe; share one.
 */
public final class PushSender implements AutoCloseable {
  /** The gRPC deadline of a call unless the builder sets another. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(10);

  private final String api;
  private final ManagedChannel channel;
  private final Channel calls;
  private final boolean hasKey;
  private final Duration timeout;

  private PushSender(Builder b) {
    this.api = b.api;
    this.timeout = b.timeout;
    this.channel = (b.channelFactory != null ? b.channelFactory : ChannelFactory.forTls(b.tls)).create(b.api);
    this.hasKey = b.apiKey != null;
    if (b.apiKey != null) {
      Metadata headers = new Metadata();
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + b.apiKey);
      this.calls = ClientInterceptors.intercept(channel, MetadataUtils.newAttachHeadersInterceptor(headers));
    } else {
      this.calls = channel;
    }
  }

  /** A sender for the api at {@code host:port}; it connects lazily. */
  public static Builder builder(String api) {
    return new Builder(api);
  }

  /** Sends one message to a user (all their devices) or one device. */
  public SendResponse send(SendOptions message) {
    return send(message.toRequest());
  }

  public SendResponse send(SendRequest request) {
    return unary(Rpcs.PUSH_SEND, request);
  }

  /**
   * Sends many messages in one call; all are enqueued or the call fails. The responses are in
   * request order.
   */
  public List<SendResponse> sendBatch(List<SendOptions> messages) {
    SendBatchRequest.Builder b = SendBatchRequest.newBuilder();
    for (SendOptions m : messages) {
      b.addRequests(m.toRequest());
    }
    return sendBatch(b.build());
  }

  public List<SendResponse> sendBatch(SendBatchRequest batch) {
    return unary(Rpcs.PUSH_SEND_BATCH, batch).getResponsesList();
  }

  /**
   * Opens a {@link SendStream}: many sends over one {@code Push.SendStream} call, with at most
   * {@code window} unanswered at once. Close it when done (try-with-resources).
   */
  public SendStream openStream(int window) {
    return new SendStream(calls, window);
  }

  /** {@link #openStream(int)} with {@link SendStream#DEFAULT_WINDOW}. */
  public SendStream openStream() {
    return openStream(SendStream.DEFAULT_WINDOW);
  }

  /** The last known delivery state of a message, overall and per target device. */
  public GetStatusResponse getStatus(String messageId) {
    return unary(Rpcs.PUSH_GET_STATUS, GetStatusRequest.newBuilder().setMessageId(messageId).build());
  }

  /** A user's connected devices and the edge each one is on. */
  public GetPresenceResponse getPresence(String userId) {
    return unary(Rpcs.PUSH_GET_PRESENCE, GetPresenceRequest.newBuilder().setUserId(userId).build());
  }

  /**
   * Subscribes devices (by id, and every known device of each user) to topics: at most 100
   * topics and 1,000 devices per call. Per device, what was applied and what was refused.
   */
  public SubscribeResponse subscribe(List<String> topics, List<String> deviceIds, List<String> userIds) {
    return unary(Rpcs.PUSH_SUBSCRIBE, subscribeRequest(topics, deviceIds, userIds));
  }

  /** The reverse of {@link #subscribe(List, List, List)}. */
  public SubscribeResponse unsubscribe(List<String> topics, List<String> deviceIds, List<String> userIds) {
    return unary(Rpcs.PUSH_UNSUBSCRIBE, subscribeRequest(topics, deviceIds, userIds));
  }

  /** The topics one device is subscribed to, sorted. */
  public List<String> getSubscriptions(String deviceId) {
    return unary(Rpcs.PUSH_GET_SUBSCRIPTIONS, GetSubscriptionsRequest.newBuilder().setDeviceId(deviceId).build())
        .getTopicsList();
  }

  private static SubscribeRequest subscribeRequest(
      List<String> topics, List<String> deviceIds, List<String> userIds) {
    return SubscribeRequest.newBuilder()
        .addAllTopics(topics)
        .addAllDeviceIds(deviceIds)
        .addAllUserIds(userIds)
        .build();
  }

  private <Q, R> R unary(MethodDescriptor<Q, R> method, Q request) {
    // A gRPC deadline, not a local timer: the server sees it and stops work past it.
    CallOptions options = CallOptions.DEFAULT.withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS);
    try {
      return ClientCalls.blockingUnaryCall(calls, method, options, request);
    } catch (StatusRuntimeException e) {
      throw PushError.from(e);
    }
  }

  /** Closes the channel, giving calls in flight up to a second to finish. */
  @Override
  public void close() {
    channel.shutdown();
    try {
      if (!channel.awaitTermination(1, TimeUnit.SECONDS)) {
        channel.shutdownNow();
      }
    } catch (InterruptedException e) {
      channel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  @Override
  public String toString() {
    return "PushSender(api=" + api + ", api_key=" + (hasKey ? "set" : "none") + ")";
  }

  /** Options of a {@link PushSender}. */
  public static final class Builder {
    private final String api;
    private String apiKey;
    private Duration timeout = DEFAULT_TIMEOUT;
    private Tls tls;
    private ChannelFactory channelFactory;

    private Builder(String api) {
      if (api == null || api.isBlank()) {
        throw new IllegalArgumentException("PushSender needs the api address, e.g. \"127.0.0.1:50052\"");
      }
      this.api = api.trim();
    }

    /** Sent as {@code authorization: Bearer <key>} on every call; null or "" for none. */
    public Builder apiKey(String key) {
      this.apiKey = key == null || key.isEmpty() ? null : key;
      return this;
    }

    /** The gRPC deadline of each call; default {@link PushSender#DEFAULT_TIMEOUT}. */
    public Builder timeout(Duration timeout) {
      this.timeout = Checks.positive(timeout, "timeout");
      return this;
    }

    /** TLS settings; default plaintext. */
    public Builder tls(Tls tls) {
      this.tls = tls;
      return this;
    }

    /** Opens the channel instead of the default (which honours {@link #tls}). */
    public Builder channelFactory(ChannelFactory factory) {
      this.channelFactory = Objects.requireNonNull(factory, "channelFactory");
      return this;
    }

    public PushSender build() {
      return new PushSender(this);
    }
  }
}
