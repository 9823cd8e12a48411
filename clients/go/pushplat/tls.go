package pushplat

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// TLSFiles names PEM files for a TLS connection; see LoadTLS.
type TLSFiles struct {
	// CAFile is the CA to check the server against; empty means the system roots.
	CAFile string
	// CertFile and KeyFile are a client certificate, for an api that requires mutual TLS.
	CertFile string
	KeyFile  string
	// ServerName overrides the name checked in the server's certificate (for connecting by
	// IP address to a server whose certificate names a host).
	ServerName string
}

// LoadTLS reads the files into a *tls.Config for Options.TLS or SenderOptions.TLS.
// LoadTLS(TLSFiles{}) verifies the server against the system roots.
func LoadTLS(files TLSFiles) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: files.ServerName}
	if files.CAFile != "" {
		pem, err := os.ReadFile(files.CAFile)
		if err != nil {
			return nil, fmt.Errorf("pushplat: cannot read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("pushplat: no PEM certificate in CA file %s", files.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (files.CertFile == "") != (files.KeyFile == "") {
		return nil, errors.New("pushplat: a client certificate needs both CertFile and KeyFile")
	}
	if files.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("pushplat: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// transport is the first dial option: TLS when configured, plaintext otherwise (the
// caller's DialOptions come after it and may still override it).
func transport(cfg *tls.Config) grpc.DialOption {
	if cfg == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}
