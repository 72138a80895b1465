package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/webhook"
)

// TestAlertmanager025Payload: the notification Alertmanager 0.25 sends
// reaches the dispatcher whole.
func TestAlertmanager025Payload(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	resp := postBytes(t, s, sample(t))
	if resp.code != 200 || resp.body != `{"alerts":1,"failed":0,"truncatedAlerts":0}`+"\n" {
		t.Fatalf("%d %s", resp.code, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	got := f.rec.got()
	if len(got) != 1 {
		t.Fatalf("dispatched %d alerts, want 1", len(got))
	}
	a := got[0]
	want := alert.Alert{
		Status: "firing",
		Labels: map[string]string{
			"alertname": "HerdStaleKubelet", "cluster": "prod-eu-1", "severity": "warning",
			"node": "ip-10-0-3-17.eu-west-1.compute.internal",
		},
		Annotations: map[string]string{
			"summary":     "kubelet on ip-10-0-3-17 is stuck relisting",
			"runbook_url": "https://github.com/herd-k8s/herd/blob/main/docs/runbooks/HerdStaleKubelet.md",
		},
		StartsAt:     time.Date(2026, 11, 23, 9, 10, 51, 398238383, time.UTC),
		Fingerprint:  "81dbbdaf65c50f6a",
		GeneratorURL: "http://prometheus-0:9090/graph?g0.expr=herd_stale_kubelet+%3E+0&g0.tab=1",
		GroupKey:     `{}:{alertname="HerdStaleKubelet"}`,
		Receiver:     "herd",
		ExternalURL:  "http://alertmanager-0.monitoring:9093",
	}
	if fmt.Sprint(a) != fmt.Sprint(want) || !a.StartsAt.Equal(want.StartsAt) || !a.EndsAt.IsZero() {
		t.Errorf("alert\n%+v\nwant\n%+v", a, want)
	}
	if a.Name() != "HerdStaleKubelet" || !a.Firing() {
		t.Errorf("Name %q Firing %v", a.Name(), a.Firing())
	}
}

// TestUnknownFieldsTolerated: fields Alertmanager adds later (0.34 already
// sends notification_reason and routeLabels) are ignored, at every level.
func TestUnknownFieldsTolerated(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	b := sample(t)
	b = edit(t, b, `"truncatedAlerts":0}`, `"truncatedAlerts":0,"notification_reason":"new_alerts","routeLabels":{"team":"sre"},"future":{"nested":[1,{"x":null}]}}`)
	b = edit(t, b, `"fingerprint":"81dbbdaf65c50f6a"`, `"fingerprint":"81dbbdaf65c50f6a","silencedBy":[],"state":"active"`)
	if resp := postBytes(t, s, b); resp.code != 200 {
		t.Fatalf("%d %s", resp.code, resp.body)
	}
	if got := f.rec.got(); len(got) != 1 || got[0].Fingerprint != "81dbbdaf65c50f6a" {
		t.Errorf("dispatched %+v", got)
	}
}

// TestEmptyAlertsIsANoOp: a message with an empty alerts list is answered
// 200 and dispatches nothing.
func TestEmptyAlertsIsANoOp(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	resp := postBytes(t, s, []byte(`{"version":"4","groupKey":"{}:{}","status":"resolved","receiver":"herd","alerts":[]}`))
	if resp.code != 200 || len(f.rec.got()) != 0 {
		t.Errorf("%d %s, dispatched %d", resp.code, resp.body, len(f.rec.got()))
	}
}

// TestBadRequest: every malformed body is 400 with what and where, and
// nothing is dispatched.
func TestBadRequest(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	full := sample(t)
	tests := []struct {
		name string
		body []byte
		msg  string
	}{
		{"version 3", edit(t, full, `"version":"4"`, `"version":"3"`), `payload version "3": herd takes Alertmanager's webhook payload version "4"`},
		{"no version", edit(t, full, `"version":"4",`, ``), `payload has no "version": herd takes Alertmanager's webhook payload version "4"`},
		{"version as number", edit(t, full, `"version":"4"`, `"version":4`), `malformed payload at line 1, column 992: version is a JSON number, want a string`},
		{"empty body", nil, `malformed JSON at the end of the body (after 0 bytes): unexpected end of JSON input`},
		{"not JSON", []byte("version=4\n"), `malformed JSON at line 1, column 1: invalid character 'v' looking for beginning of value`},
		{"truncated", full[:600], `malformed JSON at the end of the body (after 600 bytes): unexpected end of JSON input`},
		{"trailing garbage", append(bytes.TrimSpace(full), "\n{}"...), `malformed JSON at line 2, column 1: invalid character '{' after top-level value`},
		{"second line error", []byte("{\n  \"version\": \"4\",\n  \"alerts\": [}\n"), `malformed JSON at line 3, column 14: invalid character '}' looking for beginning of value`},
		{"labels as list", edit(t, full, `"labels":{"alertname":"HerdStaleKubelet","cluster":"prod-eu-1","node":"ip-10-0-3-17.eu-west-1.compute.internal","severity":"warning"}`, `"labels":["alertname"]`), `malformed payload at line 1, column 76: alerts.labels is a JSON array, want an object`},
		{"top-level list", []byte(`[{"version":"4"}]`), `malformed payload at line 1, column 1: payload is a JSON array, want an object`},
		{"negative truncatedAlerts", edit(t, full, `"truncatedAlerts":0`, `"truncatedAlerts":-1`), `malformed payload at line 1, column 1064: truncatedAlerts is a JSON number -1, want a number`},
		{"bad time", edit(t, full, `"startsAt":"2026-11-23T09:10:51.398238383Z"`, `"startsAt":"yesterday"`), `malformed payload: parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006"`},
		{"null", []byte("null"), `payload has no "version": herd takes Alertmanager's webhook payload version "4"`},
		{"no alerts", []byte(`{"version":"4","receiver":"herd","status":"firing"}`), `payload has no "alerts" list`},
		{"no data", []byte(`{"version":"4","groupKey":"{}:{}"}`), `payload has no "alerts" list`},
		{"alert status", edit(t, full, `"alerts":[{"status":"firing"`, `"alerts":[{"status":"pending"`), `alerts[0].status "pending": want firing or resolved`},
		{"alert without status", edit(t, full, `"alerts":[{"status":"firing",`, `"alerts":[{`), `alerts[0].status "": want firing or resolved`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := postBytes(t, s, tc.body)
			if resp.code != 400 || resp.body != tc.msg+"\n" {
				t.Errorf("%d %q\nwant 400 %q", resp.code, resp.body, tc.msg+"\n")
			}
		})
	}
	if n := len(f.rec.got()); n != 0 {
		t.Errorf("dispatched %d alerts from malformed bodies", n)
	}
}

// TestTooLarge: a body over 4 MiB is 413 whether or not it announces its
// length; one of exactly 4 MiB is read.
func TestTooLarge(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	big := bytes.Repeat([]byte(" "), 5<<20)
	resp := post(t, s.Client(), s.URL, bytes.NewReader(big), int64(len(big)))
	if resp.code != 413 || resp.body != "body of 5242880 bytes exceeds the 4194304-byte limit\n" {
		t.Errorf("with Content-Length: %d %q", resp.code, resp.body)
	}
	resp = post(t, s.Client(), s.URL, bytes.NewReader(big), -1)
	if resp.code != 413 || resp.body != "body exceeds the 4194304-byte limit\n" {
		t.Errorf("chunked: %d %q", resp.code, resp.body)
	}
	// A sender that lies about a small length is cut off at it by net/http;
	// one that streams one byte too many is refused.
	over := append(bytes.TrimSpace(sample(t)), bytes.Repeat([]byte(" "), 4<<20)...)
	over = over[:4<<20+1]
	if resp := post(t, s.Client(), s.URL, bytes.NewReader(over), -1); resp.code != 413 {
		t.Errorf("4 MiB + 1 chunked: %d", resp.code)
	}
	exact := append(bytes.TrimSpace(sample(t)), bytes.Repeat([]byte(" "), 4<<20)...)[:4<<20]
	if resp := post(t, s.Client(), s.URL, bytes.NewReader(exact), -1); resp.code != 200 {
		t.Errorf("exactly 4 MiB chunked: %d %s", resp.code, resp.body)
	}
	if resp := post(t, s.Client(), s.URL, bytes.NewReader(exact), int64(len(exact))); resp.code != 200 {
		t.Errorf("exactly 4 MiB: %d %s", resp.code, resp.body)
	}
	if n := len(f.rec.got()); n != 2 {
		t.Errorf("dispatched %d, want the 2 bodies at the limit", n)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	resp, err := s.Client().Get(s.URL + "/alerts")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func writeToken(t testing.TB, path, tok string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Rename over the old file, as a Secret volume update does.
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestBearerToken: no token, a wrong one, one of another length or another
// scheme is 401 with WWW-Authenticate, before the body is looked at; the
// right one passes; a rotated file takes effect and the old token stops
// working.
func TestBearerToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	const tokA, tokB = "am-token-aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "am-token-bbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	writeToken(t, path, tokA)
	auth, err := webhook.NewAuthenticator(path, "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *webhook.Options) { o.Auth, o.RequireAuth = auth, true })
	s := f.serve(t)
	body := sample(t)
	try := func(authz string) response {
		t.Helper()
		if authz == "" {
			return postBytes(t, s, body)
		}
		return postBytes(t, s, body, "Authorization", authz)
	}
	for _, authz := range []string{"", "Bearer ", "Bearer wrong", "Bearer " + tokA[:len(tokA)-1], "Bearer " + tokA + "a",
		"Basic " + tokA, "bearer" + tokA, tokA, "Bearer " + tokB} {
		resp := try(authz)
		if resp.code != 401 || resp.header.Get("WWW-Authenticate") != `Bearer realm="herd responder"` || resp.body != "missing or wrong bearer token\n" {
			t.Errorf("Authorization %q: %d %q WWW-Authenticate %q", authz, resp.code, resp.body, resp.header.Get("WWW-Authenticate"))
		}
	}
	// Unauthenticated callers learn nothing about the size limit.
	big := bytes.Repeat([]byte(" "), 5<<20)
	if resp := post(t, s.Client(), s.URL, bytes.NewReader(big), int64(len(big))); resp.code != 401 {
		t.Errorf("unauthenticated large body: %d, want 401", resp.code)
	}
	if resp := try("Bearer " + tokA); resp.code != 200 {
		t.Fatalf("right token: %d %s", resp.code, resp.body)
	}
	if n := len(f.rec.got()); n != 1 {
		t.Fatalf("dispatched %d, want only the authenticated one", n)
	}

	writeToken(t, path, tokB)
	rotated := time.Now()
	for try("Bearer "+tokB).code != 200 {
		if time.Since(rotated) > 3*time.Second {
			t.Fatal("the rotated token is not accepted after 3s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("rotated token accepted after %v", time.Since(rotated).Round(10*time.Millisecond))
	if resp := try("Bearer " + tokA); resp.code != 401 {
		t.Errorf("old token after rotation: %d, want 401", resp.code)
	}
}

// TestAuthRequired: the handler refuses to exist without authentication
// unless told otherwise, and says how to fix it.
func TestAuthRequired(t *testing.T) {
	const want = "the webhook needs authentication: give --web.bearer-token-file, or --web.config.file requiring client certificates or basic auth; or --web.insecure-no-auth to accept unauthenticated alerts"
	dir := t.TempDir()
	none, err := webhook.NewAuthenticator("", "")
	if err != nil {
		t.Fatal(err)
	}
	noAuth := filepath.Join(dir, "empty-web.yml") // valid, but authenticates nobody
	if err := os.WriteFile(noAuth, []byte("http_server_config:\n  http2: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	nobody, err := webhook.NewAuthenticator("", noAuth)
	if err != nil {
		t.Fatal(err)
	}
	for name, auth := range map[string]*webhook.Authenticator{"nil": nil, "empty": none, "web config without auth": nobody} {
		_, err := webhook.NewHandler(webhook.Options{Dispatcher: &recorder{}, Auth: auth, RequireAuth: true})
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v\nwant %s", name, err, want)
		}
		// --web.insecure-no-auth.
		if _, err := webhook.NewHandler(webhook.Options{Dispatcher: &recorder{}, Auth: auth}); err != nil {
			t.Errorf("%s without RequireAuth: %v", name, err)
		}
	}

	// Basic auth in the web config counts: the listener enforces it.
	basic := filepath.Join(dir, "basic-web.yml")
	// A well-formed bcrypt hash; the listener, not the handler, checks passwords.
	if err := os.WriteFile(basic, []byte("basic_auth_users:\n  alertmanager: $2a$10$Xc3z3fdsB.FzLPydCH63yeylfmkDSjaCnHrtnHE3JC0CQ3tZM8O6S\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	auth, err := webhook.NewAuthenticator("", basic)
	if err != nil {
		t.Fatal(err)
	}
	if !auth.Configured() || auth.String() != "basic auth" {
		t.Errorf("basic auth web config: Configured %v, %q", auth.Configured(), auth)
	}
	if _, err := webhook.NewHandler(webhook.Options{Dispatcher: &recorder{}, Auth: auth, RequireAuth: true}); err != nil {
		t.Error(err)
	}
	tok := filepath.Join(dir, "token")
	writeToken(t, tok, "s3cret-token")
	both, err := webhook.NewAuthenticator(tok, basic)
	if err != nil || both.String() != "bearer token and basic auth" {
		t.Errorf("token and basic auth: %q, %v", both, err)
	}
	if s := none.String(); s != "nothing (unauthenticated)" {
		t.Errorf("String() = %q", s)
	}

	// Bad files fail fast, naming the flag.
	for _, tc := range []struct{ token, web, prefix string }{
		{filepath.Join(dir, "missing"), "", "--web.bearer-token-file: bearer token file: stat " + filepath.Join(dir, "missing")},
		{"", filepath.Join(dir, "missing.yml"), "--web.config.file: open " + filepath.Join(dir, "missing.yml")},
	} {
		if _, err := webhook.NewAuthenticator(tc.token, tc.web); err == nil || !strings.HasPrefix(err.Error(), tc.prefix) {
			t.Errorf("error %v, want prefix %q", err, tc.prefix)
		}
	}
	empty := filepath.Join(dir, "empty-token")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := webhook.NewAuthenticator(empty, ""); err == nil || err.Error() != "--web.bearer-token-file: bearer token file "+empty+" is empty" {
		t.Errorf("empty token file: %v", err)
	}
	if _, err := webhook.NewHandler(webhook.Options{}); err == nil || err.Error() != "webhook: no dispatcher" {
		t.Errorf("no dispatcher: %v", err)
	}
}

// twoAlerts is a message with a firing alert and a resolved one.
func twoAlerts(t testing.TB) []byte {
	b := sample(t)
	second := `{"status":"resolved","labels":{"alertname":"HerdRelistStorm","client":"cilium-agent"},"annotations":{},"startsAt":"2026-11-23T08:00:00Z","endsAt":"2026-11-23T09:00:00Z","generatorURL":"","fingerprint":"0123456789abcdef"}`
	return edit(t, b, `"fingerprint":"81dbbdaf65c50f6a"}]`, `"fingerprint":"81dbbdaf65c50f6a"},`+second+`]`)
}

// TestDispatchErrors: a transient error is 503 (Alertmanager retries), after
// the rest of the message was dispatched; any other error is 200, logged
// and counted.
func TestDispatchErrors(t *testing.T) {
	errKube := errors.New("kubernetes API unavailable: connection refused")
	for _, tc := range []struct {
		name string
		fail func(alert.Alert) error
		code int
		body string
	}{
		{"transient", func(a alert.Alert) error {
			if a.Fingerprint == "81dbbdaf65c50f6a" {
				return alert.Transient(errKube)
			}
			return nil
		}, 503, "1 of 2 alerts failed transiently, retry: kubernetes API unavailable: connection refused\n"},
		{"transient via %w", func(a alert.Alert) error {
			return fmt.Errorf("cordon %s: %w", a.Labels["node"], alert.ErrTransient)
		}, 503, "2 of 2 alerts failed transiently, retry: cordon ip-10-0-3-17.eu-west-1.compute.internal: transient\n"},
		{"permanent", func(a alert.Alert) error {
			if a.Status == "resolved" {
				return errors.New("node label is not a DNS-1123 name")
			}
			return nil
		}, 200, `{"alerts":2,"failed":1,"truncatedAlerts":0}` + "\n"},
		{"transient and permanent", func(a alert.Alert) error {
			if a.Status == "resolved" {
				return errors.New("refused")
			}
			return alert.Transient(errKube)
		}, 503, "1 of 2 alerts failed transiently, retry: kubernetes API unavailable: connection refused\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil)
			f.rec.fail = tc.fail
			s := f.serve(t)
			resp := postBytes(t, s, twoAlerts(t))
			if resp.code != tc.code || resp.body != tc.body {
				t.Errorf("%d %q\nwant %d %q", resp.code, resp.body, tc.code, tc.body)
			}
			if tc.code == 503 && resp.header.Get("Retry-After") != "1" {
				t.Errorf("503 without Retry-After")
			}
			if n := len(f.rec.got()); n != 2 {
				t.Errorf("dispatched %d, want both alerts", n)
			}
			if !strings.Contains(f.logs.String(), `msg="dispatch failed"`) {
				t.Errorf("not logged:\n%s", f.logs)
			}
		})
	}
}

func TestTransient(t *testing.T) {
	base := errors.New("apiserver: 503")
	err := alert.Transient(base)
	if !errors.Is(err, alert.ErrTransient) || !errors.Is(err, base) || err.Error() != "apiserver: 503" {
		t.Errorf("Transient(%v) = %v", base, err)
	}
	if wrapped := fmt.Errorf("cordon: %w", err); !errors.Is(wrapped, alert.ErrTransient) {
		t.Error("wrapping loses ErrTransient")
	}
	if alert.Transient(nil) != nil {
		t.Error("Transient(nil) != nil")
	}
	if errors.Is(base, alert.ErrTransient) || errors.Is(context.Canceled, alert.ErrTransient) {
		t.Error("plain errors are not transient")
	}
}

// TestTruncated: truncatedAlerts is counted, logged and passed on with
// every alert, also with a "resolved" group status.
func TestTruncated(t *testing.T) {
	f := newFixture(t, nil)
	s := f.serve(t)
	b := edit(t, sample(t), `"truncatedAlerts":0`, `"truncatedAlerts":7`)
	b = edit(t, b, `"receiver":"herd","status":"firing","alerts":[{"status":"firing"`, `"receiver":"herd","status":"resolved","alerts":[{"status":"resolved"`)
	resp := postBytes(t, s, b)
	if resp.code != 200 || resp.body != `{"alerts":1,"failed":0,"truncatedAlerts":7}`+"\n" {
		t.Fatalf("%d %s", resp.code, resp.body)
	}
	if got := f.rec.got(); len(got) != 1 || got[0].TruncatedAlerts != 7 || got[0].Status != "resolved" {
		t.Errorf("dispatched %+v", got)
	}
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP herd_responder_truncated_alerts_total Alerts Alertmanager left out of notifications (truncatedAlerts, webhook max_alerts); never read as resolved.
# TYPE herd_responder_truncated_alerts_total counter
herd_responder_truncated_alerts_total 7
`), "herd_responder_truncated_alerts_total"); err != nil {
		t.Error(err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, "truncated_alerts=7") || !strings.Contains(logs, `group_key="{}:{alertname=\"HerdStaleKubelet\"}"`) {
		t.Errorf("truncation not logged:\n%s", logs)
	}
}

// TestSenderWentAway: when the request's context ends mid-message, the rest
// is not dispatched and the answer (which nobody reads) is 503.
func TestSenderWentAway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	f := newFixture(t, nil)
	f.rec.fail = func(alert.Alert) error { cancel(); return nil }
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/alerts", bytes.NewReader(twoAlerts(t)))
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	if w.Code != 503 || w.Body.String() != "the sender went away after 1 of 2 alerts\n" {
		t.Errorf("%d %q", w.Code, w.Body)
	}
	if n := len(f.rec.got()); n != 1 {
		t.Errorf("dispatched %d after the sender left", n)
	}
}

// TestConcurrentDeliveries: many deliveries at once (an HA pair, retries)
// are each dispatched, with no race (run with -race).
func TestConcurrentDeliveries(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	writeToken(t, path, "concurrent-token")
	auth, err := webhook.NewAuthenticator(path, "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *webhook.Options) { o.Auth = auth })
	var mu sync.Mutex
	inFlight, maxInFlight := 0, 0
	f.rec.fail = func(a alert.Alert) error {
		mu.Lock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		a.Labels["touched"] = "yes" // each request has its own maps
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	}
	s := f.serve(t)
	body := twoAlerts(t)
	const n = 64
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			codes <- postBytes(t, s, body, "Authorization", "Bearer concurrent-token").code
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("code %d", c)
		}
	}
	if got := len(f.rec.got()); got != 2*n {
		t.Errorf("dispatched %d, want %d", got, 2*n)
	}
	if maxInFlight < 2 {
		t.Errorf("deliveries never overlapped (max in flight %d)", maxInFlight)
	}
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(fmt.Sprintf(`
# HELP herd_responder_alerts_received_total Alerts received in well-formed Alertmanager notifications, by alertname ("other" for alertnames without a route) and status.
# TYPE herd_responder_alerts_received_total counter
herd_responder_alerts_received_total{alertname="HerdStaleKubelet",status="firing"} %d
herd_responder_alerts_received_total{alertname="other",status="resolved"} %d
`, n, n)), "herd_responder_alerts_received_total"); err != nil {
		t.Error(err)
	}
}

// TestMetrics: every metric, exactly, after a mix of requests.
func TestMetrics(t *testing.T) {
	f := newFixture(t, nil)
	f.rec.fail = func(a alert.Alert) error {
		switch a.Labels["case"] {
		case "transient":
			return alert.Transient(errors.New("apiserver down"))
		case "permanent":
			return errors.New("refused")
		}
		return nil
	}
	s := f.serve(t)
	// Before any request: the code series exist at 0, nothing else.
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP herd_responder_truncated_alerts_total Alerts Alertmanager left out of notifications (truncatedAlerts, webhook max_alerts); never read as resolved.
# TYPE herd_responder_truncated_alerts_total counter
herd_responder_truncated_alerts_total 0
# HELP herd_responder_webhook_requests_total Requests to the Alertmanager webhook, by HTTP status code answered.
# TYPE herd_responder_webhook_requests_total counter
herd_responder_webhook_requests_total{code="200"} 0
herd_responder_webhook_requests_total{code="400"} 0
herd_responder_webhook_requests_total{code="401"} 0
herd_responder_webhook_requests_total{code="405"} 0
herd_responder_webhook_requests_total{code="413"} 0
herd_responder_webhook_requests_total{code="503"} 0
`)); err != nil {
		t.Error(err)
	}

	full := sample(t)
	postBytes(t, s, full)                                                                                                           // 200, HerdStaleKubelet firing
	postBytes(t, s, twoAlerts(t))                                                                                                   // 200, + other resolved
	postBytes(t, s, edit(t, full, `"severity":"warning"},"annotations"`, `"severity":"warning","case":"transient"},"annotations"`)) // 503
	postBytes(t, s, edit(t, full, `"severity":"warning"},"annotations"`, `"severity":"warning","case":"permanent"},"annotations"`)) // 200
	postBytes(t, s, edit(t, full, `"truncatedAlerts":0`, `"truncatedAlerts":2`))                                                    // 200
	postBytes(t, s, edit(t, full, `"labels":{"alertname":"HerdStaleKubelet"`, `"labels":{"alertname":"SomethingElse"`))             // 200, other firing
	postBytes(t, s, []byte("{"))                                                                                                    // 400
	postBytes(t, s, edit(t, full, `"version":"4"`, `"version":"5"`))                                                                // 400
	post(t, s.Client(), s.URL, bytes.NewReader(make([]byte, 5<<20)), 5<<20)                                                         // 413

	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(`
# HELP herd_responder_alerts_received_total Alerts received in well-formed Alertmanager notifications, by alertname ("other" for alertnames without a route) and status.
# TYPE herd_responder_alerts_received_total counter
herd_responder_alerts_received_total{alertname="HerdStaleKubelet",status="firing"} 5
herd_responder_alerts_received_total{alertname="other",status="firing"} 1
herd_responder_alerts_received_total{alertname="other",status="resolved"} 1
# HELP herd_responder_dispatch_errors_total Alerts whose dispatch failed, by alertname and kind: transient (answered 503, Alertmanager retries) or permanent (answered 200).
# TYPE herd_responder_dispatch_errors_total counter
herd_responder_dispatch_errors_total{alertname="HerdStaleKubelet",kind="permanent"} 1
herd_responder_dispatch_errors_total{alertname="HerdStaleKubelet",kind="transient"} 1
# HELP herd_responder_truncated_alerts_total Alerts Alertmanager left out of notifications (truncatedAlerts, webhook max_alerts); never read as resolved.
# TYPE herd_responder_truncated_alerts_total counter
herd_responder_truncated_alerts_total 2
# HELP herd_responder_webhook_requests_total Requests to the Alertmanager webhook, by HTTP status code answered.
# TYPE herd_responder_webhook_requests_total counter
herd_responder_webhook_requests_total{code="200"} 5
herd_responder_webhook_requests_total{code="400"} 2
herd_responder_webhook_requests_total{code="401"} 0
herd_responder_webhook_requests_total{code="405"} 0
herd_responder_webhook_requests_total{code="413"} 1
herd_responder_webhook_requests_total{code="503"} 1
`)); err != nil {
		t.Error(err)
	}

	// A second handler on the same registry is an error, not a panic.
	if _, err := webhook.NewHandler(webhook.Options{Dispatcher: &recorder{}, Registerer: f.reg}); err == nil {
		t.Error("registering twice: no error")
	}
}

// TestReplyIsJSON: the 200 body parses (people read it in logs and curl).
func TestReplyIsJSON(t *testing.T) {
	f := newFixture(t, nil)
	resp := postBytes(t, f.serve(t), sample(t))
	var r map[string]any
	if err := json.Unmarshal([]byte(resp.body), &r); err != nil || r["alerts"] != 1.0 {
		t.Errorf("%s: %v", resp.body, err)
	}
}
