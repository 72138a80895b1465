package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	jsonnet "github.com/google/go-jsonnet"
	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/promstack"
)

// DemoMixin is the mixin's _config for the demo and the drills: a 20 s
// rate window and short `for`s, so that a storm alerts within half a
// minute instead of the production 15 minutes. Thresholds keep their
// production values.
func DemoMixin() map[string]any {
	return map[string]any{
		"rateWindow":                 "20s",
		"relistStormFor":             "10s",
		"syncRelistFor":              "5s",
		"staleKubeletFor":            "10s",
		"ghostNodeClientFor":         "30s",
		"tooLargeResourceVersionFor": "10s",
		"apiserviceUnavailableFor":   "10s",
		"apiserviceSlowFor":          "10s",
		"apiserviceFlapFor":          "10s",
		"tokenReviewStormFor":        "10s",
		"metricsServerTokenAuthFor":  "10s",
		"auditStalledFor":            "30s",
		"auditRejectedFor":           "30s",
		"responderDownFor":           "30s",
	}
}

// Mixin is the rendered mixin: Prometheus rule files as JSON (which
// Prometheus reads as YAML).
type Mixin struct {
	Alerts json.RawMessage `json:"alerts"`
	Rules  json.RawMessage `json:"rules"`
}

// RenderMixin evaluates rulesDir/mixin.libsonnet with overrides mixed into
// _config, as a user vendoring the mixin would; the committed rule files
// stay untouched.
func RenderMixin(rulesDir string, overrides map[string]any) (Mixin, error) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{rulesDir, filepath.Join(rulesDir, "vendor")}})
	b, err := json.Marshal(overrides)
	if err != nil {
		return Mixin{}, fmt.Errorf("render mixin: %w", err)
	}
	vm.ExtCode("overrides", string(b))
	out, err := vm.EvaluateAnonymousSnippet("stack.jsonnet", `
local m = (import 'mixin.libsonnet') + { _config+:: std.extVar('overrides') };
{ alerts: m.prometheusAlerts, rules: m.prometheusRules }`)
	if err != nil {
		return Mixin{}, fmt.Errorf("render %s/mixin.libsonnet: %w", rulesDir, err)
	}
	var m Mixin
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return Mixin{}, fmt.Errorf("render mixin: decode: %w", err)
	}
	return m, nil
}

// startAlertmanager routes every alert to the responder within a second or
// two (group_wait 1s, group_interval 2s), resolved ones too.
func (s *Stack) startAlertmanager(ctx context.Context) error {
	bin, err := promstack.LookAlertmanager()
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "alertmanager")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start alertmanager: %w", err)
	}
	cfg := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `route:
  receiver: herd-responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1m
receivers:
- name: herd-responder
  webhook_configs:
  - url: %q
    send_resolved: true
    http_config:
      authorization: {credentials: %q}
`, s.ResponderURL+"/alerts", alertmanagerToken), 0o644); err != nil {
		return fmt.Errorf("start alertmanager: %w", err)
	}
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.start("alertmanager", bin, []string{
		"--config.file=" + cfg,
		"--storage.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr,
		"--web.external-url=http://" + addr,
		"--cluster.listen-address=", // no HA gossip
	})
	if err != nil {
		return err
	}
	s.AlertmanagerURL = "http://" + addr
	if err := waitHTTP(ctx, p, s.AlertmanagerURL+"/-/ready", 30*time.Second); err != nil {
		return fmt.Errorf("start alertmanager: %w\n%s", err, p.Tail(20))
	}
	return nil
}

// startPrometheus scrapes herd's exporter and responder every second and
// evaluates the mixin every second, on the address startResponder reserved.
func (s *Stack) startPrometheus(ctx context.Context, m Mixin) error {
	bin, err := promstack.LookPrometheus()
	if err != nil {
		return err
	}
	dir := filepath.Join(s.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	alerts, rules := filepath.Join(dir, "herd_alerts.json"), filepath.Join(dir, "herd_rules.json")
	for path, b := range map[string][]byte{alerts: m.Alerts, rules: m.Rules} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("start prometheus: %w", err)
		}
	}
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}
rule_files: [%q, %q]
scrape_configs:
- job_name: herd-exporter
  static_configs: [{targets: [%q]}]
- job_name: herd-responder
  static_configs: [{targets: [%q]}]
alerting:
  alertmanagers:
  - api_version: v2
    static_configs: [{targets: [%q]}]
`, alerts, rules, host(s.ExporterURL), host(s.ResponderURL), host(s.AlertmanagerURL)), 0o644); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	p, err := s.start("prometheus", bin, []string{
		"--config.file=" + cfg,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + host(s.PrometheusURL),
		"--web.external-url=" + s.PrometheusURL,
		// An alert evaluated before discovery hands the notifier its
		// Alertmanager (up to 5 s after start) is re-sent a second later,
		// not a minute later.
		"--rules.alert.resend-delay=1s",
	})
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, p, s.PrometheusURL+"/-/ready", 30*time.Second); err != nil {
		return fmt.Errorf("start prometheus: %w\n%s", err, p.Tail(20))
	}
	return nil
}

func (s *Stack) promAPI() (v1.API, error) {
	c, err := api.NewClient(api.Config{Address: s.PrometheusURL})
	if err != nil {
		return nil, fmt.Errorf("prometheus client: %w", err)
	}
	return v1.NewAPI(c), nil
}

// Query evaluates an instant query now; the result must be a vector.
func (s *Stack) Query(ctx context.Context, expr string) (model.Vector, error) {
	a, err := s.promAPI()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	val, _, _, err := a.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	vec, ok := val.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %q: result is a %s, want vector", expr, val.Type())
	}
	return vec, nil
}

// QueryValue is the sum of a query's samples (0 with no series).
func (s *Stack) QueryValue(ctx context.Context, expr string) (float64, error) {
	vec, err := s.Query(ctx, expr)
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, v := range vec {
		sum += float64(v.Value)
	}
	return sum, nil
}

// Alert finds a pending or firing alert by name and labels in Prometheus.
func (s *Stack) Alert(ctx context.Context, name string, match map[string]string) (*v1.Alert, error) {
	a, err := s.promAPI()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := a.Alerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("prometheus alerts: %w", err)
	}
	for i, al := range res.Alerts {
		if string(al.Labels[model.AlertNameLabel]) != name {
			continue
		}
		ok := true
		for k, v := range match {
			ok = ok && string(al.Labels[model.LabelName(k)]) == v
		}
		if ok {
			return &res.Alerts[i], nil
		}
	}
	return nil, nil
}
