package webhook_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/webhook"
	"github.com/herd-k8s/herd/test/herdtest"
)

// sample is a notification exactly as Debian's Alertmanager 0.25 sent it
// (captured from prometheus-alertmanager 0.25.0-1+b4; only externalURL
// changed from the test's loopback address).
func sample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "alertmanager-0.25-firing.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recorder is a Dispatcher that records every alert and answers with fail
// (nil when fail is nil).
type recorder struct {
	mu     sync.Mutex
	alerts []alert.Alert
	fail   func(alert.Alert) error
}

func (r *recorder) Dispatch(ctx context.Context, a alert.Alert) error {
	r.mu.Lock()
	r.alerts = append(r.alerts, a)
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		return fail(a)
	}
	return nil
}

func (r *recorder) got() []alert.Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alert.Alert(nil), r.alerts...)
}

// known is the Known func of the tests: one routed alertname.
func known(name string) bool { return name == "HerdStaleKubelet" }

type fixture struct {
	h    *webhook.Handler
	reg  *prometheus.Registry
	rec  *recorder
	logs *herdtest.LogBuffer
}

// newFixture builds a handler with a recorder, a registry and a log buffer;
// tweak adjusts the options.
func newFixture(t testing.TB, tweak func(*webhook.Options)) *fixture {
	t.Helper()
	f := &fixture{reg: prometheus.NewRegistry(), rec: &recorder{}, logs: &herdtest.LogBuffer{}}
	opts := webhook.Options{
		Dispatcher: f.rec,
		Known:      known,
		Registerer: f.reg,
		Logger:     slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&opts)
	}
	h, err := webhook.NewHandler(opts)
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

func (f *fixture) serve(t testing.TB) *httptest.Server {
	s := httptest.NewServer(f.h)
	t.Cleanup(s.Close)
	return s
}

type response struct {
	code   int
	body   string
	header http.Header
}

// post sends body; contentLength -1 sends it chunked (no Content-Length).
// hdr is name, value pairs.
func post(t testing.TB, c *http.Client, url string, body io.Reader, contentLength int64, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	if contentLength < 0 {
		// Hide the reader's type so net/http cannot work out a length.
		req.Body = io.NopCloser(struct{ io.Reader }{body})
		req.ContentLength = -1
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, string(b), resp.Header}
}

func postBytes(t testing.TB, s *httptest.Server, b []byte, hdr ...string) response {
	t.Helper()
	return post(t, s.Client(), s.URL+"/alerts", bytes.NewReader(b), int64(len(b)), hdr...)
}

// edit replaces old with new in b exactly once.
func edit(t testing.TB, b []byte, old, new string) []byte {
	t.Helper()
	if n := strings.Count(string(b), old); n != 1 {
		t.Fatalf("edit: %q occurs %d times", old, n)
	}
	return []byte(strings.Replace(string(b), old, new, 1))
}
