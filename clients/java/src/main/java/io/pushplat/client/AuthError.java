package io.pushplat.client;

import io.grpc.Status;
import java.time.Duration;

/** The server refused the device token or the API key ({@code UNAUTHENTICATED}). */
public final class AuthError extends PushError {
  private static final long serialVersionUID = 1L;

  public AuthError(String details) {
    this(details, null, null);
  }

  AuthError(String details, Duration retryAfter, Throwable cause) {
    super(Status.Code.UNAUTHENTICATED, details, retryAfter, cause);
  }
}
