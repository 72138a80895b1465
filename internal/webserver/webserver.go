// Package webserver is the HTTP-server setup both of herd's programs share:
// the timeouts a slow or hostile client must not outlast, the JSON of the
// debug pages, the health page and the landing page that lists them.
package webserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
)

// Timeouts every listener of herd's uses. ReadTimeout is the caller's: it
// bounds reading a whole body, whose limit differs (the exporter's audit
// batches are up to 16 MiB, the responder's alerts 4 MiB).
const (
	// ReadHeaderTimeout cuts a client that trickles its headers
	// (slowloris).
	ReadHeaderTimeout = 10 * time.Second
	// WriteTimeout is longer than the slowest answer: a scrape, or an
	// alert's dispatch (under Alertmanager's 10 s).
	WriteTimeout = 60 * time.Second
	// IdleTimeout keeps the keep-alive connections of Prometheus,
	// Alertmanager and the apiserver's audit webhook, and no more.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes is plenty for a bearer token and a user agent.
	MaxHeaderBytes = 64 << 10
)

// New returns a server for h with herd's timeouts and readTimeout for a
// whole request.
func New(h http.Handler, readTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// WriteJSON answers with v as indented JSON: the debug pages are read by
// people (and jq) more than by programs.
func WriteJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Link is one entry of a landing page.
type Link struct {
	Address, Text string
}

// Mux is the start of each program's handler: /healthz answers "ok" while
// the process serves, and / is the landing page that names the program and
// links its pages (exporter-toolkit's, as Prometheus exporters have; it
// answers 404 for any other path). The caller adds the rest.
func Mux(name, description string, links ...Link) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	cfg := web.LandingConfig{Name: name, Description: description}
	for _, l := range links {
		cfg.Links = append(cfg.Links, web.LandingLinks{Address: l.Address, Text: l.Text})
	}
	// The page is a fixed template filled with these strings: it fails
	// only on a broken template, and then / is a 404 like any other path.
	if landing, err := web.NewLandingPage(cfg); err == nil {
		mux.Handle("/", landing)
	}
	return mux
}
