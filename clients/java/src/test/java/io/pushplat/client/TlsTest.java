package io.pushplat.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.grpc.Grpc;
import io.grpc.TlsServerCredentials;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import javax.net.ssl.KeyManagerFactory;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * TLS and mutual TLS on a real loopback port, with certificates made at test time by the JDK's
 * keytool (nothing is committed).
 */
class TlsTest {
  @TempDir static Path dir;

  private static final char[] PASS = "test-pass".toCharArray();

  /** Self-signed certificates for 127.0.0.1 / localhost, made once for the class. */
  @BeforeAll
  static void makeCertificates() throws Exception {
    // Two keytool processes at once: most of their time is JVM start-up.
    List<Process> running = new ArrayList<>();
    for (String alias : List.of("edge", "device")) {
      running.add(new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "keytool").toString(),
          "-genkeypair", "-alias", alias, "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=" + alias,
          "-ext", "SAN=dns:localhost,ip:127.0.0.1", "-validity", "2", "-keystore", keystore(alias).toString(),
          "-storetype", "PKCS12", "-storepass", new String(PASS), "-keypass", new String(PASS))
          .redirectErrorStream(true).start());
    }
    for (Process p : running) {
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      assertTrue(p.waitFor(60, TimeUnit.SECONDS) && p.exitValue() == 0, "keytool failed: " + out);
    }
    for (String alias : List.of("edge", "device")) {
      KeyStore store = load(alias);
      writePem(dir.resolve(alias + ".pem"), "CERTIFICATE", store.getCertificate(alias).getEncoded());
      // The private key as a PKCS#8 PEM file, as a client would be given it.
      writePem(dir.resolve(alias + "-key.pem"), "PRIVATE KEY", ((PrivateKey) store.getKey(alias, PASS)).getEncoded());
    }
  }

  private static Path keystore(String alias) {
    return dir.resolve(alias + ".p12");
  }

  private static KeyStore load(String alias) throws Exception {
    KeyStore store = KeyStore.getInstance("PKCS12");
    try (InputStream in = Files.newInputStream(keystore(alias))) {
      store.load(in, PASS);
    }
    return store;
  }

  private static void writePem(Path file, String type, byte[] der) throws Exception {
    Files.writeString(file, "-----BEGIN " + type + "-----\n"
        + Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der)
        + "\n-----END " + type + "-----\n");
  }

  private static KeyManagerFactory keyManagers(String alias) throws Exception {
    KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    kmf.init(load(alias), PASS);
    return kmf;
  }

  private FakeEdge tlsEdge(TlsServerCredentials.Builder creds) throws Exception {
    return FakeEdge.on(Grpc.newServerBuilderForPort(0, creds.build()));
  }

  private static PushClient client(int port, Tls tls) {
    PushClient.Builder b = PushClient.builder("127.0.0.1:" + port).userId("u1").deviceId("d1")
        .backoff(new Backoff(Duration.ofMillis(10), Duration.ofMillis(50)));
    if (tls != null) {
      b.tls(tls);
    }
    return b.build();
  }

  @Test
  void aClientTrustingTheCaFileConnectsAndOthersDoNot() throws Exception {
    try (FakeEdge edge = tlsEdge(TlsServerCredentials.newBuilder().keyManager(keyManagers("edge").getKeyManagers()))) {
      try (PushClient c = client(edge.port(), Tls.caFile(dir.resolve("edge.pem")))) {
        edge.nextConn().welcome("tls-session", 0);
        c.waitConnected(FakeEdge.WAIT);
        assertEquals("tls-session", c.sessionId());
      }
      // The JDK's roots do not include a self-signed test certificate; plaintext is refused too.
      for (Tls tls : new Tls[] {Tls.systemRoots(), null}) {
        try (PushClient c = client(edge.port(), tls)) {
          assertThrows(TimeoutException.class, () -> c.waitConnected(Duration.ofMillis(500)));
          assertTrue(c.error().isEmpty(), "a handshake failure is retried like any unreachable edge");
        }
      }
      assertNull(edge.pollConn(Duration.ofMillis(50)), "a Hello got through without trusted TLS");
    }
  }

  @Test
  void mutualTlsNeedsTheClientCertificate() throws Exception {
    TlsServerCredentials.Builder creds = TlsServerCredentials.newBuilder()
        .keyManager(keyManagers("edge").getKeyManagers())
        .trustManager(dir.resolve("device.pem").toFile())
        .clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
    try (FakeEdge edge = tlsEdge(creds)) {
      Tls trust = Tls.caFile(dir.resolve("edge.pem"));
      try (PushClient c = client(edge.port(), trust)) {
        assertThrows(TimeoutException.class, () -> c.waitConnected(Duration.ofMillis(500)));
      }
      try (PushClient c = client(edge.port(), trust.withClientCertificate(dir.resolve("device.pem"), dir.resolve("device-key.pem")))) {
        edge.nextConn().welcome("mtls", 0);
        c.waitConnected(FakeEdge.WAIT);
      }
    }
  }

  @Test
  void unreadableFilesAreRefusedUpFront() {
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Tls.caFile(dir.resolve("missing.pem")));
    assertTrue(e.getMessage().contains("missing.pem"), e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> Tls.systemRoots().withAuthority(" "));
  }
}
