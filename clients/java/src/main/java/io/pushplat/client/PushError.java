package io.pushplat.client;

import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.Optional;

/**
 * A failed call or stream: its gRPC status code and the server's explanation. Unchecked, like
 * grpc-java's own {@link StatusRuntimeException}.
 */
public class PushError extends RuntimeException {
  private static final long serialVersionUID = 1L;

  /** The trailing-metadata key in which a server asks for a minimum delay (milliseconds). */
  public static final String RETRY_AFTER_KEY = "retry-after-ms";

  static final Metadata.Key<String> RETRY_AFTER =
      Metadata.Key.of(RETRY_AFTER_KEY, Metadata.ASCII_STRING_MARSHALLER);

  private final Status.Code code;
  private final String details;
  private final Duration retryAfter;

  public PushError(Status.Code code, String details) {
    this(code, details, null, null);
  }

  PushError(Status.Code code, String details, Duration retryAfter, Throwable cause) {
    super(code + (details == null || details.isEmpty() ? "" : ": " + details), cause);
    this.code = code;
    this.details = details == null ? "" : details;
    this.retryAfter = retryAfter;
  }

  /** The gRPC status code, e.g. {@code UNAUTHENTICATED}. */
  public Status.Code code() {
    return code;
  }

  /** The server's message (the status description), or ours for local failures. */
  public String details() {
    return details;
  }

  /** The delay the server asked for in the {@code retry-after-ms} trailer, if it sent one. */
  public Optional<Duration> retryAfter() {
    return Optional.ofNullable(retryAfter);
  }

  /** Whether retrying might help; see {@link #isRetriable(Status.Code)}. */
  public boolean isRetriable() {
    return isRetriable(code);
  }

  /**
   * Whether a status is worth retrying. The request or credentials are wrong, or the server does
   * not speak this API, for UNAUTHENTICATED, INVALID_ARGUMENT, PERMISSION_DENIED and
   * UNIMPLEMENTED, and ALREADY_EXISTS means an idempotency key was reused for another request;
   * everything else (UNAVAILABLE, ...) is transient.
   */
  public static boolean isRetriable(Status.Code code) {
    switch (code) {
      case UNAUTHENTICATED:
      case INVALID_ARGUMENT:
      case PERMISSION_DENIED:
      case UNIMPLEMENTED:
      case ALREADY_EXISTS:
        return false;
      default:
        return true;
    }
  }

  /** Converts a grpc-java failure (with its trailers) into a PushError; others become UNKNOWN. */
  public static PushError from(Throwable t) {
    if (t instanceof PushError) {
      return (PushError) t;
    }
    if (t instanceof StatusRuntimeException) {
      StatusRuntimeException e = (StatusRuntimeException) t;
      return from(e.getStatus(), e.getTrailers());
    }
    if (t instanceof StatusException) {
      StatusException e = (StatusException) t;
      return from(e.getStatus(), e.getTrailers());
    }
    return new PushError(Status.Code.UNKNOWN, String.valueOf(t), null, t);
  }

  static PushError from(Status status, Metadata trailers) {
    String details = status.getDescription();
    if (details == null && status.getCause() != null) {
      details = status.getCause().toString();
    }
    Duration hint = retryAfter(trailers);
    if (status.getCode() == Status.Code.UNAUTHENTICATED) {
      return new AuthError(details, hint, status.getCause());
    }
    return new PushError(status.getCode(), details, hint, status.getCause());
  }

  /** The {@code retry-after-ms} hint, or null if absent or not a positive number. */
  static Duration retryAfter(Metadata trailers) {
    if (trailers == null) {
      return null;
    }
    String value = trailers.get(RETRY_AFTER);
    if (value == null) {
      return null;
    }
    try {
      double ms = Double.parseDouble(value.trim());
      if (!(ms > 0) || Double.isInfinite(ms)) {
        return null;
      }
      return Duration.ofNanos((long) (ms * 1_000_000));
    } catch (NumberFormatException e) {
      return null;
    }
  }
}
