package webhook_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/herd-k8s/herd/responder/webhook"
)

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "herd-responder"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// TestWebConfigAuth: only client certificates that are required and
// verified count as authentication; TLS alone, or certificates that are
// requested but optional, do not.
func TestWebConfigAuth(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	for _, tc := range []struct {
		clientAuth string
		want       string
	}{
		{"", "nothing (unauthenticated)"},
		{"RequestClientCert", "nothing (unauthenticated)"},
		{"VerifyClientCertIfGiven", "nothing (unauthenticated)"},
		{"RequireAnyClientCert", "nothing (unauthenticated)"}, // any certificate, unverified
		{"RequireAndVerifyClientCert", "verified client certificate"},
	} {
		cfg := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", cert, key)
		if tc.clientAuth != "" {
			cfg += fmt.Sprintf("  client_auth_type: %s\n  client_ca_file: %s\n", tc.clientAuth, cert)
		}
		path := filepath.Join(dir, "web-"+tc.clientAuth+".yml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := webhook.NewAuthenticator("", path)
		if err != nil {
			t.Fatalf("%q: %v", tc.clientAuth, err)
		}
		if a.String() != tc.want || a.Configured() != (tc.want != "nothing (unauthenticated)") {
			t.Errorf("client_auth_type %q: %q (configured %v), want %q", tc.clientAuth, a, a.Configured(), tc.want)
		}
	}
	// A web config that exporter-toolkit would refuse is refused here.
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("tls_server_config:\n  cert_file: "+cert+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.NewAuthenticator("", bad); err == nil {
		t.Error("web config with a certificate and no key: no error")
	}
}
