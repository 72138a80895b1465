package promstack_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/notify/webhook"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/promstack"
)

const alwaysFiringRules = `groups:
  - name: promstack-test
    rules:
      - alert: PromstackAlwaysFiring
        expr: vector(1)
        for: 0s
        labels:
          severity: critical
          team: herd
        annotations:
          summary: fires on the first evaluation
`

// TestAlertReachesReceiver drives the whole path a herd alert takes:
// rule evaluation in Prometheus, delivery to Alertmanager, routing, and the
// webhook POST.
func TestAlertReachesReceiver(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 25*time.Second)
	defer cancel()

	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "promstack_test_value", Help: "Scraped by the test Prometheus."})
	gauge.Set(42)
	reg.MustRegister(gauge)
	target := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(target.Close)

	start := time.Now()
	recv := promstack.NewReceiver(t)
	am := promstack.StartAlertmanager(t, recv.AlertmanagerConfig())
	t.Logf("alertmanager ready after %v", time.Since(start).Round(time.Millisecond))
	prom := promstack.StartPrometheus(t, promstack.PromOptions{
		RuleFiles:        map[string]string{"always.yml": alwaysFiringRules},
		ScrapeConfigs:    []promstack.ScrapeConfig{{JobName: "target", Targets: []string{target.Listener.Addr().String()}}},
		AlertmanagerURLs: []string{am.URL},
	})

	t.Logf("prometheus ready after %v", time.Since(start).Round(time.Millisecond))

	vec, err := prom.Query(ctx, "vector(1)")
	if err != nil {
		t.Fatal(err)
	}
	if len(vec) != 1 || vec[0].Value != 1 {
		t.Fatalf("vector(1) = %v, want one sample of value 1", vec)
	}

	if _, err := prom.WaitForQuery(ctx, `promstack_test_value{job="target"}`, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value == 42
	}); err != nil {
		t.Fatal(err)
	}

	alert, err := prom.WaitForAlert(ctx, "PromstackAlwaysFiring", v1.AlertStateFiring, map[string]string{"severity": "critical"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("alert firing in prometheus after %v", time.Since(start).Round(time.Millisecond))
	if alert.Labels["team"] != "herd" {
		t.Errorf("prometheus alert labels = %v, want team=herd", alert.Labels)
	}

	msg, err := recv.WaitFor(ctx, func(m webhook.Message) bool {
		return m.Status == "firing" && m.CommonLabels["alertname"] == "PromstackAlwaysFiring"
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("webhook received after %v", time.Since(start).Round(time.Millisecond))
	if msg.Version != "4" {
		t.Errorf("webhook payload version = %q, want 4", msg.Version)
	}
	if msg.Receiver != "test" {
		t.Errorf("webhook receiver = %q, want test", msg.Receiver)
	}
	if len(msg.Alerts) != 1 {
		t.Fatalf("webhook carried %d alerts, want 1: %+v", len(msg.Alerts), msg.Alerts)
	}
	got := msg.Alerts[0]
	for k, want := range map[string]string{"alertname": "PromstackAlwaysFiring", "severity": "critical", "team": "herd"} {
		if got.Labels[k] != want {
			t.Errorf("webhook alert label %s = %q, want %q (labels %v)", k, got.Labels[k], want, got.Labels)
		}
	}
	if got.Annotations["summary"] != "fires on the first evaluation" {
		t.Errorf("webhook alert annotations = %v", got.Annotations)
	}
	if got.Status != "firing" || got.StartsAt.IsZero() || got.Fingerprint == "" {
		t.Errorf("webhook alert status=%q startsAt=%v fingerprint=%q", got.Status, got.StartsAt, got.Fingerprint)
	}

	amAlerts, err := am.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, a := range amAlerts {
		if a.Labels["alertname"] == "PromstackAlwaysFiring" && a.Status.State == "active" {
			found = true
		}
	}
	if !found {
		t.Errorf("alertmanager alerts = %+v, want an active PromstackAlwaysFiring", amAlerts)
	}
}

// TestMissingBinaryGivesInstallHint checks the error a developer without
// the Debian packages sees, for each binary.
func TestMissingBinaryGivesInstallHint(t *testing.T) {
	const want = "apt-get install prometheus prometheus-alertmanager"
	for env, look := range map[string]func() (string, error){
		"HERD_PROMETHEUS":   promstack.LookPrometheus,
		"HERD_ALERTMANAGER": promstack.LookAlertmanager,
		"HERD_PROMTOOL":     promstack.LookPromtool,
	} {
		t.Run(env, func(t *testing.T) {
			t.Setenv(env, "/nonexistent/herd-test-binary")
			path, err := look()
			if err == nil {
				t.Fatalf("lookup with %s pointing nowhere returned %q, want an error", env, path)
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), env) {
				t.Errorf("error %q should name %s and say %q", err, env, want)
			}
		})
	}
}

// fatalRecorder stands in for the testing.TB of a test that lacks the
// binaries, to prove the Start functions fail rather than skip.
type fatalRecorder struct {
	testing.TB
	failed  string
	skipped bool
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.failed = strings.TrimSpace(fmt.Sprintln(args...))
	runtime.Goexit()
}
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *fatalRecorder) Skip(...any)          { r.skipped = true; runtime.Goexit() }
func (r *fatalRecorder) Skipf(string, ...any) { r.skipped = true; runtime.Goexit() }
func (r *fatalRecorder) SkipNow()             { r.skipped = true; runtime.Goexit() }

func TestMissingBinaryFailsStart(t *testing.T) {
	t.Setenv("HERD_PROMETHEUS", "/nonexistent/prometheus")
	t.Setenv("HERD_ALERTMANAGER", "/nonexistent/alertmanager")
	for name, start := range map[string]func(testing.TB){
		"prometheus":   func(tb testing.TB) { promstack.StartPrometheus(tb, promstack.PromOptions{}) },
		"alertmanager": func(tb testing.TB) { promstack.StartAlertmanager(tb, "") },
	} {
		t.Run(name, func(t *testing.T) {
			rec := &fatalRecorder{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				start(rec)
			}()
			<-done
			if rec.skipped {
				t.Fatal("a missing binary skipped the test; it must fail it")
			}
			if !strings.Contains(rec.failed, promstack.InstallHint) {
				t.Errorf("fatal message %q lacks the install hint %q", rec.failed, promstack.InstallHint)
			}
		})
	}
}

// TestNoChildSurvivesCleanup checks process hygiene: once a test's cleanups
// have run, the test binary has no children left, not even zombies.
func TestNoChildSurvivesCleanup(t *testing.T) {
	t.Run("stack", func(t *testing.T) {
		recv := promstack.NewReceiver(t)
		am := promstack.StartAlertmanager(t, recv.AlertmanagerConfig())
		promstack.StartPrometheus(t, promstack.PromOptions{AlertmanagerURLs: []string{am.URL}})
		if kids := children(t, os.Getpid()); len(kids) < 2 {
			t.Fatalf("children while running = %v, want alertmanager and prometheus", kids)
		}
	})
	if kids := children(t, os.Getpid()); len(kids) > 0 {
		t.Errorf("processes left after cleanup: %v", kids)
	}
}

// TestScrapeHTTPSWithBearerToken scrapes a target the way a kube-apiserver's
// /metrics must be scraped: https, a bearer token, the serving certificate
// verified with a CA file (or not verified at all), on a job interval of its
// own.
func TestScrapeHTTPSWithBearerToken(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const token = "promstack-test-token"
	reg := prometheus.NewRegistry()
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "promstack_tls_value", Help: "Scraped over https with a token."})
	gauge.Set(7)
	reg.MustRegister(gauge)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	target := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	t.Cleanup(target.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: target.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := target.Listener.Addr().String()
	prom := promstack.StartPrometheus(t, promstack.PromOptions{ScrapeConfigs: []promstack.ScrapeConfig{
		{JobName: "ca", Targets: []string{addr}, Scheme: "https", BearerToken: token, CAFile: caFile, ScrapeInterval: 2 * time.Second},
		{JobName: "insecure", Targets: []string{addr}, Scheme: "https", BearerToken: token, InsecureSkipVerify: true},
		{JobName: "no-token", Targets: []string{addr}, Scheme: "https", InsecureSkipVerify: true},
	}})
	for _, job := range []string{"ca", "insecure"} {
		if _, err := prom.WaitForQuery(ctx, `promstack_tls_value{job="`+job+`"}`, func(v model.Vector) bool {
			return len(v) == 1 && v[0].Value == 7
		}); err != nil {
			t.Error(err)
		}
	}
	if _, err := prom.WaitForQuery(ctx, `up{job="no-token"}`, func(v model.Vector) bool {
		return len(v) == 1 && v[0].Value == 0
	}); err != nil {
		t.Errorf("a job without the token should be down: %v", err)
	}
	cfg, err := os.ReadFile(filepath.Join(prom.Dir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), "scrape_interval: 2s") {
		t.Errorf("job ca's scrape_interval is not in prometheus.yml:\n%s", cfg)
	}
}
