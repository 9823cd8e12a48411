package io.pushplat.client;

import io.grpc.Status;

/**
 * Thrown by {@link PushClient#receive()} and {@link PushClient#waitConnected} once the client is
 * closed, or once its stream ended cleanly while reconnecting was off. Code {@code CANCELLED}.
 */
public final class ClientClosedException extends PushError {
  private static final long serialVersionUID = 1L;

  public ClientClosedException(String details) {
    super(Status.Code.CANCELLED, details);
  }
}
