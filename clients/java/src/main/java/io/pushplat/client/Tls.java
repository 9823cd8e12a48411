package io.pushplat.client;

import io.grpc.ChannelCredentials;
import io.grpc.TlsChannelCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Objects;

/**
 * TLS settings for a client or sender. Without a {@code Tls}, the SDK opens plaintext channels,
 * like the other SDKs' defaults; use TLS whenever the edge or api is not on a trusted network.
 *
 * <pre>{@code
 * Tls.systemRoots()                                   // a certificate from a public CA
 * Tls.caFile(Path.of("ca.pem"))                       // your own CA (PEM bundle)
 * Tls.caFile(ca).withClientCertificate(cert, key)     // mutual TLS (e.g. the api port)
 * }</pre>
 */
public final class Tls {
  private final Path caFile;
  private final Path certChain;
  private final Path privateKey;
  private final String authority;

  private Tls(Path caFile, Path certChain, Path privateKey, String authority) {
    this.caFile = caFile;
    this.certChain = certChain;
    this.privateKey = privateKey;
    this.authority = authority;
  }

  /** Trust the JDK's default CA certificates. */
  public static Tls systemRoots() {
    return new Tls(null, null, null, null);
  }

  /**
   * Trust only the CA certificates in this PEM file.
   *
   * @throws IllegalArgumentException if the file is not readable
   */
  public static Tls caFile(Path pemFile) {
    return new Tls(readable(pemFile, "CA file"), null, null, null);
  }

  /** Also present a client certificate chain and its PKCS#8 private key (both PEM). */
  public Tls withClientCertificate(Path certChainPem, Path privateKeyPem) {
    return new Tls(
        caFile, readable(certChainPem, "client certificate"), readable(privateKeyPem, "client key"), authority);
  }

  /** Check the server's certificate against this name instead of the host in the address. */
  public Tls withAuthority(String serverName) {
    if (serverName == null || serverName.isBlank()) {
      throw new IllegalArgumentException("authority must be a host name, got \"" + serverName + "\"");
    }
    return new Tls(caFile, certChain, privateKey, serverName);
  }

  /** The name checked in the server's certificate, or null for the address's host. */
  public String authority() {
    return authority;
  }

  /** grpc-java credentials for these settings. */
  public ChannelCredentials credentials() {
    TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder();
    try {
      if (caFile != null) {
        b.trustManager(caFile.toFile());
      }
      if (certChain != null) {
        b.keyManager(certChain.toFile(), privateKey.toFile());
      }
    } catch (IOException e) {
      throw new UncheckedIOException("cannot read TLS files: " + e.getMessage(), e);
    }
    return b.build();
  }

  private static Path readable(Path file, String what) {
    Objects.requireNonNull(file, what);
    if (!Files.isReadable(file)) {
      throw new IllegalArgumentException(what + " " + file + " does not exist or is not readable");
    }
    return file;
  }

  @Override
  public String toString() {
    return "Tls(ca=" + (caFile == null ? "system roots" : caFile) + (certChain == null ? "" : ", client cert=" + certChain) + ")";
  }
}
