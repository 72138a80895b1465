package herdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Cert is what a test certificate says. Every one is valid from an hour ago
// (clock skew between processes) for ten years (a demo left running).
type Cert struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	// Client makes a client certificate (ExtKeyUsageClientAuth); the
	// default serves (ExtKeyUsageServerAuth).
	Client bool
}

// CA signs certificates.
type CA struct {
	// PEM is the CA certificate, for whoever verifies what it signs.
	PEM  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA is a new certificate authority called commonName.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", commonName, err)
	}
	tmpl, err := template(Cert{CommonName: commonName})
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = nil
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA %s: %w", commonName, err)
	}
	return &CA{PEM: encodePEM("CERTIFICATE", der), cert: cert, key: key}, nil
}

// Issue signs a new key's certificate for c. It returns both as PEM.
func (ca *CA) Issue(c Cert) (certPEM, keyPEM []byte, err error) {
	tmpl, err := template(c)
	if err != nil {
		return nil, nil, err
	}
	return sign(tmpl, ca.cert, ca.key)
}

// SelfSigned is a certificate that is its own CA: whoever verifies it
// trusts certPEM itself.
func SelfSigned(c Cert) (certPEM, keyPEM []byte, err error) {
	tmpl, err := template(c)
	if err != nil {
		return nil, nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage |= x509.KeyUsageCertSign
	return sign(tmpl, nil, nil)
}

func template(c Cert) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate %s: serial: %w", c.CommonName, err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if c.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: c.CommonName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		DNSNames:     c.DNSNames,
		IPAddresses:  c.IPs,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}, nil
}

// sign creates tmpl's certificate for a new key, signed by parent's key (nil:
// self-signed).
func sign(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return encodePEM("CERTIFICATE", der), encodePEM("EC PRIVATE KEY", kb), nil
}

func encodePEM(typ string, b []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})
}
