package io.pushplat.client;

import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;

/**
 * Opens the channel for one address. The device client opens a fresh channel for every
 * connection attempt (behind a layer-4 balancer a reused TCP connection would stick to the edge
 * that just sent it away); the sender opens one for its life.
 *
 * <p>The default ({@link #forTls}) is {@code Grpc.newChannelBuilder(address, credentials)}. Supply
 * your own to set channel options or to use an in-process transport in tests.
 */
@FunctionalInterface
public interface ChannelFactory {
  ManagedChannel create(String address);

  /** Plaintext when {@code tls} is null, otherwise TLS with those settings. */
  static ChannelFactory forTls(Tls tls) {
    ChannelCredentials credentials = tls == null ? InsecureChannelCredentials.create() : tls.credentials();
    return address -> {
      ManagedChannelBuilder<?> b = Grpc.newChannelBuilder(address, credentials);
      if (tls != null && tls.authority() != null) {
        b.overrideAuthority(tls.authority());
      }
      return b.build();
    };
  }
}
