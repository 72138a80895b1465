package stack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	jsonnet "github.com/google/go-jsonnet"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/controlplane"
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
		"syncRelistHold":             "20s", // the fast path's isolation ends with the demo's storm, not 10 m after
		"fastPathEvaluationInterval": "",    // the fast path's group at the stack's interval
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
// Prometheus reads as YAML), the dashboard and the effective _config.
type Mixin struct {
	Alerts    json.RawMessage `json:"alerts"`
	Rules     json.RawMessage `json:"rules"`
	Dashboard map[string]any  `json:"dashboard"`
	Config    map[string]any  `json:"config"`
}

// RenderMixin evaluates rulesDir/mixin.libsonnet with overrides mixed into
// _config, as a user vendoring the mixin would; the committed rule files
// stay untouched. It checks that the overrides reached the rules (the
// HerdRelistStorm rule carries relistStormFor and rateWindow, and no
// responder alert is rendered when herdResponderEnabled is false).
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
{
  alerts: m.prometheusAlerts,
  rules: m.prometheusRules,
  dashboard: m.grafanaDashboards['herd.json'],
  config: m._config,
}`)
	if err != nil {
		return Mixin{}, fmt.Errorf("render %s/mixin.libsonnet: %w", rulesDir, err)
	}
	var m Mixin
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return Mixin{}, fmt.Errorf("render mixin: decode: %w", err)
	}
	return m, checkOverrides(m, overrides)
}

// RuleFile is a Prometheus rule file.
type RuleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string            `json:"alert"`
			Record string            `json:"record"`
			Expr   string            `json:"expr"`
			For    string            `json:"for"`
			Labels map[string]string `json:"labels"`
		} `json:"rules"`
	} `json:"groups"`
}

// checkOverrides fails when the rendered alerts do not carry overrides.
func checkOverrides(m Mixin, overrides map[string]any) error {
	var alerts RuleFile
	if err := json.Unmarshal(m.Alerts, &alerts); err != nil {
		return fmt.Errorf("render mixin: decode alerts: %w", err)
	}
	found := false
	for _, g := range alerts.Groups {
		for _, rule := range g.Rules {
			if rule.Alert == "HerdRelistStorm" {
				found = true
				if f, ok := overrides["relistStormFor"]; ok && rule.For != f {
					return fmt.Errorf("render mixin: HerdRelistStorm rendered without the overrides: for %q, want %v", rule.For, f)
				}
				if w, ok := overrides["rateWindow"]; ok && !strings.Contains(rule.Expr, fmt.Sprint("herd:relists_by_resource:rate", w)) {
					return fmt.Errorf("render mixin: HerdRelistStorm rendered without rateWindow %v: %s", w, rule.Expr)
				}
			}
			if strings.HasPrefix(rule.Alert, "HerdResponder") && overrides["herdResponderEnabled"] == false {
				return fmt.Errorf("render mixin: %s rendered with herdResponderEnabled=false", rule.Alert)
			}
		}
	}
	if !found {
		return errors.New("render mixin: the rendered alerts have no HerdRelistStorm")
	}
	return nil
}

// renderMixin renders the mixin with the stack's overrides; alert
// descriptions name herd's debug pages, the stack's own.
func (s *Stack) renderMixin() error {
	if s.opts.ShippedRules {
		return nil
	}
	s.Mixin["herdExporterURL"] = s.ExporterURL
	if s.ResponderURL != "" {
		s.Mixin["herdResponderURL"] = s.ResponderURL
	}
	var err error
	s.Rendered, err = RenderMixin(filepath.Join(s.root, "rules"), s.Mixin)
	return err
}

func (s *Stack) rulesSummary() string {
	if s.opts.ShippedRules {
		return "the shipped rules"
	}
	return fmt.Sprintf("the mixin with rateWindow %v, HerdRelistStorm for %v", s.Mixin["rateWindow"], s.Mixin["relistStormFor"])
}

// AlertmanagerConfig routes every alert to a webhook URL, resolved ones
// too, with AlertmanagerToken, grouped by groupBy: a new group after wait
// (the demo's 1s), a change in it after interval (2s), a firing one again
// every repeat, and HerdSynchronizedRelist, which its rule holds after the
// wave, every heldRepeat (docs/install.md's route).
func AlertmanagerConfig(url string, groupBy []string, wait, interval, repeat, heldRepeat time.Duration) string {
	by, _ := json.Marshal(groupBy)
	held := ""
	if heldRepeat > 0 && heldRepeat != repeat {
		held = fmt.Sprintf(`  routes:
    - matchers: ['alertname="HerdSynchronizedRelist"']
      repeat_interval: %s
`, model.Duration(heldRepeat))
	}
	return fmt.Sprintf(`route:
  receiver: herd
  group_by: %s
  group_wait: %s
  group_interval: %s
  repeat_interval: %s
%sreceivers:
  - name: herd
    webhook_configs:
      - url: %q
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            credentials: %s
`, by, model.Duration(wait), model.Duration(interval), model.Duration(repeat), held, url, AlertmanagerToken)
}

func (s *Stack) startAlertmanager() error {
	receiver := s.opts.AlertReceiver
	if receiver == "" {
		if s.ResponderURL == "" {
			return errors.New("start alertmanager: no AlertReceiver and no responder of the stack's own")
		}
		receiver = s.ResponderURL + "/alerts"
	}
	dir := filepath.Join(s.Dir, "alertmanager")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start alertmanager: %w", err)
	}
	am, err := promstack.RunAlertmanager(dir, AlertmanagerConfig(receiver, s.opts.AlertGroupBy, s.opts.AlertGroupWait, s.opts.AlertGroupInterval, s.opts.AlertRepeat, s.opts.HeldAlertRepeat))
	if err != nil {
		return err
	}
	s.track(am.Process())
	s.AM, s.AlertmanagerURL = am, am.URL
	return nil
}

// startPrometheus scrapes herd's exporter (and the stack's responder, and
// the apiserver if asked) and evaluates the rules at ScrapeInterval.
func (s *Stack) startPrometheus() error {
	rules := map[string]string{}
	if s.opts.ShippedRules {
		for _, f := range []string{"prometheus_rules.yaml", "prometheus_alerts.yaml"} {
			b, err := os.ReadFile(filepath.Join(s.root, "rules", f))
			if err != nil {
				return fmt.Errorf("start prometheus: the mixin's rules: %w", err)
			}
			rules[f] = string(b)
		}
	} else {
		rules["herd_alerts.json"], rules["herd_rules.json"] = string(s.Rendered.Alerts), string(s.Rendered.Rules)
	}
	maps.Copy(rules, s.opts.Rules)
	scrape := []promstack.ScrapeConfig{{JobName: ExporterJob, Targets: []string{httpAddr(s.ExporterURL)}}}
	var responders []string
	if s.ResponderURL != "" {
		responders = append(responders, httpAddr(s.ResponderURL))
	}
	responders = append(responders, s.opts.ResponderAddrs...)
	if len(responders) > 0 {
		scrape = append(scrape, promstack.ScrapeConfig{JobName: ResponderJob, Targets: responders})
	}
	if s.opts.ScrapeAPIServer {
		ca := filepath.Join(s.Dir, "apiserver-ca.crt")
		if err := os.WriteFile(ca, s.CP.Config(controlplane.Admin).TLSClientConfig.CAData, 0o644); err != nil {
			return fmt.Errorf("start prometheus: %w", err)
		}
		scrape = append(scrape, promstack.ScrapeConfig{
			JobName: "apiserver", Targets: []string{strings.TrimPrefix(s.CP.URL, "https://")},
			Scheme: "https", BearerToken: s.CP.Token(controlplane.Admin), CAFile: ca,
			// kube-apiserver's /metrics is large: every 2 s (the
			// default) is enough for burn-rate windows of 10 s and more.
			ScrapeInterval: s.opts.APIServerScrapeInterval,
		})
	}
	opts := promstack.PromOptions{
		RuleFiles:          rules,
		ScrapeConfigs:      scrape,
		ScrapeInterval:     s.opts.ScrapeInterval,
		EvaluationInterval: s.opts.ScrapeInterval,
	}
	if s.AM != nil {
		opts.AlertmanagerURLs = []string{s.AM.URL}
	}
	dir := filepath.Join(s.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	p, err := promstack.RunPrometheus(dir, opts)
	if err != nil {
		return err
	}
	s.track(p.Process())
	s.Prom, s.PrometheusURL = p, p.URL
	return nil
}

// Query evaluates an instant query now; the result must be a vector.
func (s *Stack) Query(ctx context.Context, expr string) (model.Vector, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return s.Prom.Query(ctx, expr)
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
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := s.Prom.API.Alerts(ctx)
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
