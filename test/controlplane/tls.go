package controlplane

import (
	"crypto/tls"
	"encoding/base64"
)

// insecureTLS is used only to poll /readyz before the apiserver has written
// the self-signed certificate the real clients then verify.
func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // readiness probe only

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
