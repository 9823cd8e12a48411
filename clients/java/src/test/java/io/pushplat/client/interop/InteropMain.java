package io.pushplat.client.interop;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import io.pushplat.client.Priorities;
import io.pushplat.client.PushClient;
import io.pushplat.client.PushError;
import io.pushplat.client.PushSender;
import io.pushplat.client.SendOptions;
import io.pushplat.client.Tls;
import io.pushplat.v1.Message;
import io.pushplat.v1.SubscriptionResult;
import io.pushplat.v1.SendResponse;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeoutException;

/**
 * Drives the Java SDK for the cross-language tests in tests/interop: it listens as a device or
 * sends as a backend, and prints one JSON object per line (the same CLI as clients/go/cmd/interop).
 *
 * <pre>
 * interop listen --edge HOST:PORT (--token T | --user U --device D) [--count N] [--timeout-ms MS] [--digest]
 *                [--tls-ca FILE]
 * interop send --api HOST:PORT [--api-key K] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
 *              (--user U | --device D) [--priority high]
 *              [--ttl S] [--collapse-key K] [--idempotency-key K] [--at-least-once]
 *              [--content-type T] [--label K=V]... PAYLOAD
 * </pre>
 *
 * <p>listen prints {"event":"connected",...} once welcomed, then {"event":"message",...} per
 * message (acked as it is handed over), and exits 0 after --count messages. Failures print
 * {"event":"error","code":"UNAUTHENTICATED","details":...} and exit 1 (2 for a timeout).
 */
public final class InteropMain {
  private static final Gson JSON = new GsonBuilder().disableHtmlEscaping().create();

  private InteropMain() {}

  /** Parsed {@code --name value} / {@code --name=value} options, repeatable ones kept in order. */
  private static final class Args {
    final Map<String, List<String>> options = new HashMap<>();
    final List<String> positional = new ArrayList<>();

    Args(String[] argv, int from, List<String> flags) {
      for (int i = from; i < argv.length; i++) {
        String a = argv[i];
        if (!a.startsWith("--")) {
          positional.add(a);
          continue;
        }
        String name = a.substring(2);
        String value;
        int eq = name.indexOf('=');
        if (eq >= 0) {
          value = name.substring(eq + 1);
          name = name.substring(0, eq);
        } else if (flags.contains(name)) {
          value = "true";
        } else if (i + 1 < argv.length) {
          value = argv[++i];
        } else {
          throw new IllegalArgumentException("--" + name + " needs a value");
        }
        options.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
      }
    }

    String get(String name, String fallback) {
      List<String> v = options.get(name);
      return v == null ? fallback : v.get(v.size() - 1);
    }

    boolean has(String name) {
      return Boolean.parseBoolean(get(name, "false"));
    }

    List<String> all(String name) {
      return options.getOrDefault(name, List.of());
    }
  }

  private static void emit(Map<String, Object> event) {
    System.out.println(JSON.toJson(event));
    System.out.flush();
  }

  private static Map<String, Object> event(String kind) {
    Map<String, Object> e = new LinkedHashMap<>();
    e.put("event", kind);
    return e;
  }

  private static int fail(Throwable t) {
    Map<String, Object> e = event("error");
    if (t instanceof TimeoutException) {
      e.put("code", "TIMEOUT");
      e.put("details", t.getMessage());
      emit(e);
      return 2;
    }
    PushError p = t instanceof PushError ? (PushError) t : PushError.from(t);
    e.put("code", p.code().name());
    e.put("details", p.details());
    emit(e);
    return 1;
  }

  /** TLS from --tls-ca (and --tls-cert/--tls-key), or null for plaintext. */
  private static Tls tls(Args a) {
    String ca = a.get("tls-ca", "");
    if (ca.isEmpty()) {
      return null;
    }
    Tls tls = Tls.caFile(Path.of(ca));
    String cert = a.get("tls-cert", "");
    return cert.isEmpty() ? tls : tls.withClientCertificate(Path.of(cert), Path.of(a.get("tls-key", "")));
  }

  private static int listen(Args a) throws InterruptedException {
    int count = Integer.parseInt(a.get("count", "1"));
    Duration timeout = Duration.ofMillis(Long.parseLong(a.get("timeout-ms", "30000")));
    long deadline = System.nanoTime() + timeout.toNanos();
    try (PushClient client = PushClient.builder(a.get("edge", "127.0.0.1:50051"))
        .token(a.get("token", ""))
        .userId(a.get("user", ""))
        .deviceId(a.get("device", ""))
        .tls(tls(a))
        .build()) {
      try {
        client.waitConnected(timeout);
        Map<String, Object> connected = event("connected");
        connected.put("session_id", client.sessionId());
        connected.put("edge_id", client.edgeId());
        emit(connected);
        String topic = a.get("topic", "");
        if (!topic.isEmpty()) {
          SubscriptionResult result = client.subscribe(timeout, topic);
          Map<String, Object> subscribed = event("subscribed");
          subscribed.put("applied", new ArrayList<>(result.getAppliedList()));
          subscribed.put("refused", result.getRefusedCount());
          emit(subscribed);
        }
        for (int received = 0; received < count; received++) {
          Message m = client.receive(Duration.ofNanos(Math.max(0, deadline - System.nanoTime())));
          if (m == null) {
            throw new TimeoutException("gave up after " + timeout.toMillis() + " ms");
          }
          Map<String, Object> e = event("message");
          e.put("message_id", m.getMessageId());
          e.put("priority", Priorities.name(m.getPriorityValue()));
          e.put("content_type", m.getContentType());
          e.put("collapse_key", m.getCollapseKey());
          e.put("created_at_ms", m.getCreatedAtMs());
          e.put("requires_ack", m.getRequiresAck());
          e.put("labels", new TreeMap<>(m.getLabelsMap()));
          e.put("topic", m.getTopic());
          e.put("session_id", client.sessionId());
          e.put("connects", client.connects());
          byte[] payload = m.getPayload().toByteArray();
          e.put("payload_bytes", payload.length);
          e.put("payload_sha256", sha256(payload));
          String text = utf8(payload);
          if (a.has("digest")) {
            // Large payloads: the digest says they arrived whole without printing megabytes.
          } else if (text != null) {
            e.put("payload", text);
          } else {
            e.put("payload", Base64.getEncoder().encodeToString(payload));
            e.put("payload_encoding", "base64");
          }
          emit(e);
        }
        return 0;
      } catch (PushError | TimeoutException e) {
        return fail(e);
      }
    }
  }

  private static String sha256(byte[] bytes) {
    try {
      return java.util.HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-256").digest(bytes));
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  private static String utf8(byte[] bytes) {
    try {
      return StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(bytes))
          .toString();
    } catch (CharacterCodingException e) {
      return null;
    }
  }

  private static int send(Args a) {
    if (a.positional.size() != 1) {
      System.err.println("interop send: give exactly one PAYLOAD");
      return 2;
    }
    String user = a.get("user", "");
    String device = a.get("device", "");
    String topic = a.get("topic", "");
    SendOptions message =
        !topic.isEmpty()
            ? SendOptions.toTopic(topic)
            : user.isEmpty() ? SendOptions.toDevice(device) : SendOptions.toUser(user);
    message.payload(a.positional.get(0))
        .contentType(a.get("content-type", "text/plain"))
        .priority(a.get("priority", "normal"))
        .ttlSeconds(Long.parseLong(a.get("ttl", "0")))
        .collapseKey(a.get("collapse-key", ""))
        .idempotencyKey(a.get("idempotency-key", ""))
        .atLeastOnce(Boolean.parseBoolean(a.get("at-least-once", "false")));
    for (String label : a.all("label")) {
      int eq = label.indexOf('=');
      if (eq < 0) {
        throw new IllegalArgumentException("label " + label + " is not K=V");
      }
      message.label(label.substring(0, eq), label.substring(eq + 1));
    }
    try (PushSender sender = PushSender.builder(a.get("api", "127.0.0.1:50052"))
        .apiKey(a.get("api-key", ""))
        .timeout(Duration.ofMillis(Long.parseLong(a.get("timeout-ms", "10000"))))
        .tls(tls(a))
        .build()) {
      SendResponse r = sender.send(message);
      Map<String, Object> e = event("sent");
      e.put("message_id", r.getMessageId());
      e.put("duplicate", r.getDuplicate());
      emit(e);
      return 0;
    } catch (PushError e) {
      return fail(e);
    }
  }

  public static void main(String[] argv) throws Exception {
    if (argv.length < 1) {
      System.err.println("usage: interop listen|send [options]");
      System.exit(2);
    }
    int code;
    switch (argv[0]) {
      case "listen":
        code = listen(new Args(argv, 1, List.of("digest")));
        break;
      case "send":
        code = send(new Args(argv, 1, List.of("at-least-once")));
        break;
      default:
        System.err.println("interop: unknown command \"" + argv[0] + "\"");
        code = 2;
    }
    System.exit(code);
  }
}
