package webhook_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amwebhook "github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/responder/alert"
	"github.com/herd-k8s/herd/responder/webhook"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/promstack"
)

// delivery is one POST Alertmanager made, as the server saw it.
type delivery struct {
	at            time.Time
	authorization string
	userAgent     string
	code          int
	msg           amwebhook.Message
}

// deliveryLog records every request before and after the handler.
type deliveryLog struct {
	mu sync.Mutex
	ds []delivery
}

func (l *deliveryLog) wrap(t *testing.T, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		d := delivery{at: time.Now(), authorization: r.Header.Get("Authorization"), userAgent: r.Header.Get("User-Agent")}
		if err := json.Unmarshal(body, &d.msg); err != nil {
			t.Errorf("alertmanager sent a body that does not decode: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		cw := herdtest.NewStatusRecorder(w)
		h.ServeHTTP(cw, r)
		d.code = cw.Code
		l.mu.Lock()
		l.ds = append(l.ds, d)
		l.mu.Unlock()
	})
}

// of returns the deliveries of one alertname's group so far.
func (l *deliveryLog) of(alertname string) []delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []delivery
	for _, d := range l.ds {
		if d.msg.Data != nil && d.msg.GroupLabels["alertname"] == alertname {
			out = append(out, d)
		}
	}
	return out
}

// waitFor polls until pred accepts alertname's deliveries.
func (l *deliveryLog) waitFor(ctx context.Context, t *testing.T, alertname, what string, pred func([]delivery) bool) []delivery {
	t.Helper()
	for {
		ds := l.of(alertname)
		if pred(ds) {
			return ds
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %s: not seen (%d deliveries: %s)", alertname, what, len(ds), codes(ds))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func codes(ds []delivery) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprint(d.code)
	}
	return strings.Join(s, ",")
}

// postAlerts sends alerts to Alertmanager's v2 API, as Prometheus does.
func postAlerts(t *testing.T, ctx context.Context, am *promstack.Alertmanager, alerts string) {
	t.Helper()
	if err := promstack.PostAlerts(ctx, am.URL, []byte(alerts)); err != nil {
		t.Fatal(err)
	}
}

// TestRealAlertmanager runs Debian's Alertmanager 0.25 against the handler
// and checks the contract end to end:
//   - a notification arrives with the bearer token from
//     http_config.authorization.credentials_file and decodes into the
//     labels that were posted;
//   - a transient dispatch failure (503) is retried by Alertmanager's retry
//     stage within the same flush, well before the next group_interval, and
//     once answered 200 the group is not sent again (repeat_interval 1h);
//   - a wrong token (401) is not retried by the retry stage: the next attempt
//     comes only with the next group_interval flush;
//   - the resolved notification carries endsAt.
func TestRealAlertmanager(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Second)
	defer cancel()
	start := time.Now()

	dir := t.TempDir()
	tokenPath, wrongPath := filepath.Join(dir, "token"), filepath.Join(dir, "wrong-token")
	const token = "alertmanager-to-herd-0123456789abcdef"
	writeToken(t, tokenPath, token)
	writeToken(t, wrongPath, "not-the-token")

	auth, err := webhook.NewAuthenticator(tokenPath, "")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	calls := map[string]int{} // per fingerprint and status
	var dispatched []alert.Alert
	h, err := webhook.NewHandler(webhook.Options{
		Dispatcher: webhook.DispatcherFunc(func(_ context.Context, a alert.Alert) error {
			mu.Lock()
			defer mu.Unlock()
			dispatched = append(dispatched, a)
			key := a.Fingerprint + "/" + a.Status
			calls[key]++
			if a.Firing() && calls[key] == 1 {
				return alert.Transient(fmt.Errorf("kubernetes API unavailable (test)"))
			}
			return nil
		}),
		Auth:        auth,
		RequireAuth: true,
		Known:       func(name string) bool { return name == "HerdStaleKubelet" },
		Registerer:  prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	log := &deliveryLog{}
	mux := http.NewServeMux()
	mux.Handle("/alerts", log.wrap(t, h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	am := promstack.StartAlertmanager(t, fmt.Sprintf(`route:
  receiver: herd
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
  - receiver: herd-wrong-token
    matchers: ['alertname="HerdWrongToken"']
    group_interval: 2s
receivers:
- name: herd
  webhook_configs:
  - url: %[1]q
    send_resolved: true
    http_config:
      authorization:
        credentials_file: %[2]q
- name: herd-wrong-token
  webhook_configs:
  - url: %[1]q
    http_config:
      authorization:
        credentials_file: %[3]q
`, srv.URL+"/alerts", tokenPath, wrongPath))
	t.Logf("alertmanager ready after %v", time.Since(start).Round(time.Millisecond))

	const node = "ip-10-0-3-17.eu-west-1.compute.internal"
	postAlerts(t, ctx, am, fmt.Sprintf(`[
  {"labels": {"alertname": "HerdStaleKubelet", "node": %q, "severity": "warning"},
   "annotations": {"summary": "kubelet is stuck relisting"},
   "generatorURL": "http://prometheus-0:9090/graph?g0.expr=herd_stale_kubelet"},
  {"labels": {"alertname": "HerdWrongToken", "severity": "warning"}}
]`, node))
	posted := time.Now()

	// 1. First attempt 503, retried by the retry stage, then 200.
	ds := log.waitFor(ctx, t, "HerdStaleKubelet", "a 503 then a 200", func(ds []delivery) bool {
		return len(ds) >= 2 && ds[len(ds)-1].code == 200
	})
	if len(ds) != 2 || ds[0].code != 503 {
		t.Fatalf("deliveries %s, want 503,200", codes(ds))
	}
	gap := ds[1].at.Sub(ds[0].at)
	t.Logf("first delivery %v after the POST; retried after %v", ds[0].at.Sub(posted).Round(time.Millisecond), gap.Round(time.Millisecond))
	// Backoff starts at 0.5s ±50 %; the next group_interval flush would
	// come 1s after the first.
	if gap > 900*time.Millisecond {
		t.Errorf("retry came %v after the 503: not the retry stage", gap)
	}
	for i, d := range ds {
		if d.authorization != "Bearer "+token {
			t.Errorf("delivery %d: Authorization %q", i, d.authorization)
		}
		if !strings.HasPrefix(d.userAgent, "Alertmanager/0.25") {
			t.Errorf("delivery %d: User-Agent %q, want Alertmanager/0.25 (the Debian package)", i, d.userAgent)
		}
		if d.msg.Version != "4" || d.msg.GroupKey != `{}:{alertname="HerdStaleKubelet"}` || d.msg.Receiver != "herd" || d.msg.TruncatedAlerts != 0 {
			t.Errorf("delivery %d: version %q groupKey %q receiver %q truncated %d", i, d.msg.Version, d.msg.GroupKey, d.msg.Receiver, d.msg.TruncatedAlerts)
		}
	}
	mu.Lock()
	got := append([]alert.Alert(nil), dispatched...)
	mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("dispatched %d alerts, want the same one twice", len(got))
	}
	for _, a := range got {
		if a.Name() != "HerdStaleKubelet" || a.Labels["node"] != node || a.Labels["severity"] != "warning" ||
			a.Annotations["summary"] != "kubelet is stuck relisting" || !a.Firing() || !a.EndsAt.IsZero() ||
			a.StartsAt.IsZero() || a.Fingerprint == "" || a.GroupKey != `{}:{alertname="HerdStaleKubelet"}` ||
			a.GeneratorURL != "http://prometheus-0:9090/graph?g0.expr=herd_stale_kubelet" {
			t.Errorf("dispatched %+v", a)
		}
	}
	if got[0].Fingerprint != got[1].Fingerprint {
		t.Errorf("the retry carried another alert: %s, %s", got[0].Fingerprint, got[1].Fingerprint)
	}

	// 2. A wrong token: 401 each time, and the attempts are a group_interval
	// (2s on that route) apart, not a backoff step.
	wrong := log.waitFor(ctx, t, "HerdWrongToken", "two 401 attempts", func(ds []delivery) bool { return len(ds) >= 2 })
	for i, d := range wrong {
		if d.code != 401 || d.authorization != "Bearer not-the-token" {
			t.Errorf("wrong-token attempt %d: %d %q", i, d.code, d.authorization)
		}
	}
	wgap := wrong[1].at.Sub(wrong[0].at)
	t.Logf("401 attempts %v apart (group_interval 2s)", wgap.Round(time.Millisecond))
	if wgap < 1500*time.Millisecond {
		t.Errorf("401 attempts %v apart: Alertmanager retried a 4xx within the flush", wgap)
	}

	// 3. Answered 200, the group is not sent again: by now at least two
	// group_interval flushes (1s) have passed since the 200.
	if wait := time.Until(ds[1].at.Add(2500 * time.Millisecond)); wait > 0 {
		time.Sleep(wait)
	}
	if again := log.of("HerdStaleKubelet"); len(again) != 2 {
		t.Errorf("after the 200: deliveries %s, want no more", codes(again))
	}

	// 4. Resolve it: the resolved notification has endsAt.
	endsAt := time.Now().UTC().Truncate(time.Second)
	postAlerts(t, ctx, am, fmt.Sprintf(`[{"labels": {"alertname": "HerdStaleKubelet", "node": %q, "severity": "warning"},
  "annotations": {"summary": "kubelet is stuck relisting"}, "endsAt": %q,
  "generatorURL": "http://prometheus-0:9090/graph?g0.expr=herd_stale_kubelet"}]`, node, endsAt.Format(time.RFC3339)))
	log.waitFor(ctx, t, "HerdStaleKubelet", "a resolved notification", func(ds []delivery) bool {
		return len(ds) >= 3 && ds[len(ds)-1].msg.Status == "resolved" && ds[len(ds)-1].code == 200
	})
	mu.Lock()
	last := dispatched[len(dispatched)-1]
	mu.Unlock()
	if last.Status != "resolved" || !last.EndsAt.Equal(endsAt) || last.Fingerprint != got[0].Fingerprint {
		t.Errorf("resolved: %+v, want endsAt %v", last, endsAt)
	}
	mu.Lock()
	for _, a := range dispatched {
		if a.Name() == "HerdWrongToken" {
			t.Errorf("dispatched an alert delivered with the wrong token: %+v", a)
		}
	}
	mu.Unlock()
	t.Logf("done after %v", time.Since(start).Round(time.Millisecond))
}
