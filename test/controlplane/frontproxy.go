package controlplane

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
	"time"
)

// FrontProxyClientName is the CommonName of the client certificate the
// aggregator presents to aggregated API servers, and the only name
// --requestheader-allowed-names accepts.
const FrontProxyClientName = "front-proxy-client"

// frontProxyArgs are the flags that make kube-apiserver's aggregator work as
// it does in a kubeadm cluster: it proxies /apis/<group>/<version> of
// non-local APIServices to their backends, authenticating as
// front-proxy-client and passing the user in X-Remote-* headers, and it dials
// the endpoints in the service's EndpointSlices (there is no service network
// here to route a ClusterIP).
func (cp *ControlPlane) frontProxyArgs() []string {
	return []string{
		"--requestheader-client-ca-file=" + cp.path("certs/front-proxy-ca.crt"),
		"--requestheader-allowed-names=" + FrontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + cp.path("certs/front-proxy-client.crt"),
		"--proxy-client-key-file=" + cp.path("certs/front-proxy-client.key"),
		"--enable-aggregator-routing=true",
	}
}

// writeFrontProxyCerts generates the requestheader CA and the
// front-proxy-client certificate it signs.
func (cp *ControlPlane) writeFrontProxyCerts() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("front-proxy CA key: %w", err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "herd-test-front-proxy-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("front-proxy CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("front-proxy CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("front-proxy client key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: FrontProxyClientName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("front-proxy client certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("front-proxy client key: %w", err)
	}
	cp.frontProxyCA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"certs/front-proxy-ca.crt", cp.frontProxyCA, 0o644},
		{"certs/front-proxy-client.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644},
		{"certs/front-proxy-client.key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
	}
	for _, f := range files {
		if err := os.WriteFile(cp.path(f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// FrontProxyCA is the PEM requestheader CA. An aggregated API server verifies
// the aggregator's client certificate against it before trusting the
// X-Remote-User and X-Remote-Group headers.
func (cp *ControlPlane) FrontProxyCA() []byte { return cp.frontProxyCA }
