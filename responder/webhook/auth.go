package webhook

import (
	"fmt"
	"github.com/herd-k8s/herd/internal/webauth"
	"net/http"
	"strings"
)

// Authenticator is how callers of POST /alerts prove who they are: a bearer
// token checked by the handler (--web.bearer-token-file, re-read when the
// file changes, compared in constant time), and/or client certificates or
// basic auth that exporter-toolkit's listener enforces before any handler
// runs (--web.config.file). With both, a caller needs both.
type Authenticator struct {
	tokens   *webauth.TokenFile
	listener string // what the web config requires, "" when nothing
}

// NewAuthenticator reads the token file (if any: "" for none) and the web
// config (if any) once, failing fast on a missing or empty token file or an
// invalid web config.
func NewAuthenticator(tokenFile, webConfigFile string) (*Authenticator, error) {
	a := &Authenticator{}
	if tokenFile != "" {
		t, err := webauth.NewTokenFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--web.bearer-token-file: %w", err)
		}
		a.tokens = t
	}
	if webConfigFile != "" {
		l, err := webauth.ListenerAuth(webConfigFile)
		if err != nil {
			return nil, fmt.Errorf("--web.config.file: %w", err)
		}
		a.listener = l
	}
	return a, nil
}

// Configured reports whether callers must authenticate at all. A nil
// Authenticator is not configured.
func (a *Authenticator) Configured() bool {
	return a != nil && (a.tokens != nil || a.listener != "")
}

// String says what callers must present, for the start-up log.
func (a *Authenticator) String() string {
	var parts []string
	if a != nil && a.tokens != nil {
		parts = append(parts, "bearer token")
	}
	if a != nil && a.listener != "" {
		parts = append(parts, a.listener)
	}
	if len(parts) == 0 {
		return "nothing (unauthenticated)"
	}
	return strings.Join(parts, " and ")
}

// allow checks the bearer token, when there is one to check.
func (a *Authenticator) allow(r *http.Request) bool {
	return a == nil || a.tokens == nil || a.tokens.Allow(r)
}
