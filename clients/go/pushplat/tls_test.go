package pushplat

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/pushplat/pushplat/clients/go/pushplatv1"
)

// testCA makes certificates at test time; nothing is committed.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, file: filepath.Join(t.TempDir(), name+".crt")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a leaf certificate for 127.0.0.1 and localhost (server and client use).
func (ca *testCA) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serverTLS is a grpc.ServerOption serving ca's certificate; with clientCA, clients must
// present a certificate it signed.
func serverTLS(t *testing.T, ca *testCA, clientCA *testCA) grpc.ServerOption {
	t.Helper()
	certFile, keyFile := ca.issue(t, "server")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(clientCA.cert)
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return grpc.Creds(credentials.NewTLS(cfg))
}

func loadTLS(t *testing.T, files TLSFiles) *tls.Config {
	t.Helper()
	cfg, err := LoadTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func sendOnce(t *testing.T, addr string, opts SenderOptions) error {
	t.Helper()
	opts.Timeout = 2 * time.Second
	s := newTestSender(t, addr, opts)
	_, err := s.Send(context.Background(), SendOptions{DeviceID: "d1", Payload: []byte("x")})
	return err
}

func TestSenderOverTLSChecksTheServerAgainstTheCA(t *testing.T) {
	ca, other := newTestCA(t, "ca"), newTestCA(t, "other")
	f, addr := startFakePush(t, serverTLS(t, ca, nil))
	if err := sendOnce(t, addr, SenderOptions{TLS: loadTLS(t, TLSFiles{CAFile: ca.file})}); err != nil {
		t.Fatalf("send over TLS: %v", err)
	}
	if got := len(f.requests); got != 1 {
		t.Fatalf("server saw %d requests, want 1", got)
	}
	for name, opts := range map[string]SenderOptions{
		"plaintext":    {},
		"another CA":   {TLS: loadTLS(t, TLSFiles{CAFile: other.file})},
		"system roots": {TLS: loadTLS(t, TLSFiles{})},
	} {
		err := sendOnce(t, addr, opts)
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("%s: got %v (%v), want Unavailable", name, code, err)
		}
	}
}

func TestSenderPresentsAClientCertificateForMutualTLS(t *testing.T) {
	ca, clients := newTestCA(t, "ca"), newTestCA(t, "clients")
	_, addr := startFakePush(t, serverTLS(t, ca, clients))
	if err := sendOnce(t, addr, SenderOptions{TLS: loadTLS(t, TLSFiles{CAFile: ca.file})}); err == nil {
		t.Fatal("mutual TLS server accepted a sender without a client certificate")
	}
	certFile, keyFile := clients.issue(t, "backend")
	files := TLSFiles{CAFile: ca.file, CertFile: certFile, KeyFile: keyFile}
	if err := sendOnce(t, addr, SenderOptions{TLS: loadTLS(t, files)}); err != nil {
		t.Fatalf("send with a client certificate: %v", err)
	}
}

func TestClientOverTLSReceives(t *testing.T) {
	ca := newTestCA(t, "ca")
	e := startFakeEdge(t, serverTLS(t, ca, nil))
	c := dialTest(t, e, Options{TLS: loadTLS(t, TLSFiles{CAFile: ca.file})})
	conn := e.nextConn(t)
	conn.welcome(t, "s1", 30_000)
	conn.push(t, &pb.Message{MessageId: "m1", Payload: []byte("over tls")})
	if m := recv(t, c); m.GetMessageId() != "m1" {
		t.Fatalf("got %q", m.GetMessageId())
	}
}

func TestLoadTLSExplainsBadFiles(t *testing.T) {
	if _, err := LoadTLS(TLSFiles{CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	_ = os.WriteFile(garbage, []byte("not pem"), 0o600)
	if _, err := LoadTLS(TLSFiles{CAFile: garbage}); err == nil {
		t.Error("a CA file without PEM was accepted")
	}
	if _, err := LoadTLS(TLSFiles{CertFile: garbage}); err == nil {
		t.Error("a client certificate without its key was accepted")
	}
}
