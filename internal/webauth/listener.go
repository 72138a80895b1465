// Package webauth holds the authentication both of herd's servers share:
// what an exporter-toolkit web config makes a listener require of clients,
// and bearer tokens read from a file that may be rotated.
package webauth

import (
	"os"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
	"go.yaml.in/yaml/v2"
)

// ListenerAuth validates an exporter-toolkit web config and says what it
// makes the listener require of every client: "verified client certificate",
// "basic auth", both, or "" for neither (TLS alone authenticates nobody, and
// nor do the optional client-certificate modes). An empty path is "".
func ListenerAuth(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	if err := web.Validate(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c web.Config
	if err := yaml.Unmarshal(b, &c); err != nil {
		return "", err
	}
	var parts []string
	if c.TLSConfig.ClientAuth == "RequireAndVerifyClientCert" {
		parts = append(parts, "verified client certificate")
	}
	if len(c.Users) > 0 {
		parts = append(parts, "basic auth")
	}
	return strings.Join(parts, " and "), nil
}
