package io.pushplat.client;

import com.google.protobuf.ByteString;
import io.pushplat.v1.DeliveryMode;
import io.pushplat.v1.Priority;
import io.pushplat.v1.SendRequest;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * One message to send: start with {@link #toUser} (every device of the user) or {@link
 * #toDevice}, then set what you need. Not thread-safe; build one per message.
 *
 * <pre>{@code
 * sender.send(SendOptions.toUser("alice").payload("hi").priority("high").atLeastOnce(true));
 * }</pre>
 */
public final class SendOptions {
  private final String userId;
  private final String deviceId;
  private String topic;
  private ByteString payload = ByteString.EMPTY;
  private String contentType = "";
  private Priority priority = Priority.PRIORITY_NORMAL;
  private long ttlSeconds;
  private String collapseKey = "";
  private String idempotencyKey = "";
  private boolean atLeastOnce;
  private final Map<String, String> labels = new LinkedHashMap<>();

  private SendOptions(String userId, String deviceId) {
    this.userId = userId;
    this.deviceId = deviceId;
  }

  /** Every device of this user. */
  public static SendOptions toUser(String userId) {
    return new SendOptions(Objects.requireNonNull(userId, "userId"), null);
  }

  /** This one device. */
  public static SendOptions toDevice(String deviceId) {
    return new SendOptions(null, Objects.requireNonNull(deviceId, "deviceId"));
  }

  public SendOptions payload(byte[] bytes) {
    this.payload = ByteString.copyFrom(bytes);
    return this;
  }

  /** The payload as UTF-8. */
  public SendOptions payload(String text) {
    this.payload = ByteString.copyFrom(text, StandardCharsets.UTF_8);
    return this;
  }

  public SendOptions payload(ByteString bytes) {
    this.payload = Objects.requireNonNull(bytes, "payload");
    return this;
  }

  /** Describes the payload, e.g. "application/json". */
  public SendOptions contentType(String contentType) {
    this.contentType = Objects.requireNonNull(contentType, "contentType");
    return this;
  }

  /** The lane; unspecified means normal. */
  public SendOptions priority(Priority priority) {
    this.priority = priority == Priority.PRIORITY_UNSPECIFIED ? Priority.PRIORITY_NORMAL : priority;
    return this;
  }

  /** "high", "normal" or "low". */
  public SendOptions priority(String name) {
    return priority(Priorities.parse(name));
  }

  /** How long the message stays deliverable; 0 means the server default. */
  public SendOptions ttlSeconds(long seconds) {
    if (seconds < 0) {
      throw new IllegalArgumentException("ttlSeconds must be >= 0, got " + seconds);
    }
    this.ttlSeconds = seconds;
    return this;
  }

  /** A newer message with the same key replaces an older one still waiting in the inbox. */
  public SendOptions collapseKey(String key) {
    this.collapseKey = Objects.requireNonNull(key, "collapseKey");
    return this;
  }

  /**
   * A repeated send with the same key returns the first message_id with duplicate = true, which
   * makes retries safe.
   */
  public SendOptions idempotencyKey(String key) {
    this.idempotencyKey = Objects.requireNonNull(key, "idempotencyKey");
    return this;
  }

  /** Keep the message in the device's inbox until it acks (or the TTL ends). */
  public SendOptions atLeastOnce(boolean atLeastOnce) {
    this.atLeastOnce = atLeastOnce;
    return this;
  }

  public SendOptions label(String key, String value) {
    labels.put(Objects.requireNonNull(key, "label key"), Objects.requireNonNull(value, "label value"));
    return this;
  }

  public SendOptions labels(Map<String, String> labels) {
    labels.forEach(this::label);
    return this;
  }

  /**
   * The request, checking what the server would reject locally (the target).
   *
   * @throws IllegalArgumentException if the user or device id is empty
   */
  /**
   * Every device subscribed to this topic that is connected when the message reaches its edge
   * (at-most-once).
   */
  public static SendOptions toTopic(String topic) {
    SendOptions options = new SendOptions(null, null);
    options.topic = Objects.requireNonNull(topic, "topic");
    return options;
  }

  public SendRequest toRequest() {
    SendRequest.Builder b =
        SendRequest.newBuilder()
            .setPayload(payload)
            .setContentType(contentType)
            .setPriority(priority)
            .setTtlSeconds(ttlSeconds)
            .setCollapseKey(collapseKey)
            .setIdempotencyKey(idempotencyKey)
            .setDelivery(atLeastOnce ? DeliveryMode.AT_LEAST_ONCE : DeliveryMode.AT_MOST_ONCE)
            .putAllLabels(labels);
    if (userId != null) {
      if (userId.isEmpty()) {
        throw new IllegalArgumentException("toUser needs a user id, got \"\"");
      }
      b.setUserId(userId);
    } else if (topic != null) {
      if (topic.isEmpty()) {
        throw new IllegalArgumentException("toTopic needs a topic name, got \"\"");
      }
      b.setTopic(topic);
    } else {
      if (deviceId.isEmpty()) {
        throw new IllegalArgumentException("toDevice needs a device id, got \"\"");
      }
      b.setDeviceId(deviceId);
    }
    return b.build();
  }
}
