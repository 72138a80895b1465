package promstack

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// defaultInterval keeps scrape and rule evaluation fast enough that a test
// sees a rule fire within a few seconds.
const defaultInterval = time.Second

// PromOptions describes the Prometheus a test needs.
type PromOptions struct {
	// RuleFiles maps a file name (a base name, no directories) to the YAML
	// content of a rule file.
	RuleFiles map[string]string
	// ScrapeConfigs are the jobs to scrape.
	ScrapeConfigs []ScrapeConfig
	// ScrapeInterval and EvaluationInterval default to 1s.
	ScrapeInterval     time.Duration
	EvaluationInterval time.Duration
	// AlertmanagerURLs are base URLs (e.g. Alertmanager.URL) to send alerts to.
	AlertmanagerURLs []string
	// EnableLifecycle enables /-/reload and /-/quit. Use Stop rather than
	// /-/quit: an exit the harness did not cause is reported as a crash.
	EnableLifecycle bool
	// ExtraArgs are appended to the command line, e.g. --enable-feature=...
	ExtraArgs []string
}

// ScrapeConfig is one scrape job with static targets.
type ScrapeConfig struct {
	JobName string
	// Targets are host:port pairs, normally loopback test servers
	// (httptest.Server.Listener.Addr().String()).
	Targets []string
	// MetricsPath defaults to /metrics.
	MetricsPath string
	// Scheme is "http" (the default) or "https".
	Scheme string
	// BearerToken, if set, is sent as "Authorization: Bearer <token>", as
	// a kube-apiserver's /metrics requires.
	BearerToken string
	// CAFile verifies an https target's serving certificate;
	// InsecureSkipVerify skips verification instead.
	CAFile             string
	InsecureSkipVerify bool
	// ScrapeInterval overrides the global interval for this job (its
	// timeout follows it); zero keeps the global one. A heavy target such as
	// kube-apiserver's /metrics is worth scraping less often.
	ScrapeInterval time.Duration
}

// Prometheus is a running Prometheus server owned by a test.
type Prometheus struct {
	// URL is the base URL, e.g. http://127.0.0.1:40123.
	URL string
	// Dir holds the config, rule files, TSDB and log.
	Dir string
	// API is a client for the HTTP API, for anything the helpers below
	// do not cover.
	API v1.API

	server
}

// StartPrometheus starts Prometheus with a configuration generated from
// opts and returns once /-/ready answers. It listens on a free loopback
// port, keeps its TSDB in t.TempDir(), and is stopped by t.Cleanup. A
// missing binary, an invalid option or a start failure (including invalid
// rule files, which Prometheus rejects at start) fails the test.
func StartPrometheus(t testing.TB, opts PromOptions) *Prometheus {
	t.Helper()
	return startForTest(t, func(dir string) (*Prometheus, error) { return RunPrometheus(dir, opts) })
}

// RunPrometheus is StartPrometheus for a caller without a test (the demo,
// the drills, test/stack): Prometheus keeps its files in dir, and the
// caller stops it with Stop.
func RunPrometheus(dir string, opts PromOptions) (*Prometheus, error) {
	bin, err := LookPrometheus()
	if err != nil {
		return nil, err
	}
	cfgPath, err := writePromConfig(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("start prometheus: %w", err)
	}
	child, baseURL, err := launch("prometheus", bin, dir, func(addr string) []string {
		args := []string{
			"--config.file=" + cfgPath,
			"--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr,
			// Alert generator URLs otherwise name the host's hostname.
			"--web.external-url=http://" + addr,
			// Rules evaluate before service discovery hands the notifier
			// its Alertmanagers (up to 5s), so the first notification of a
			// firing alert is usually dropped. With the default 1m resend
			// delay the alert would then reach Alertmanager a minute late.
			"--rules.alert.resend-delay=" + model.Duration(cmp.Or(opts.EvaluationInterval, defaultInterval)).String(),
		}
		if opts.EnableLifecycle {
			args = append(args, "--web.enable-lifecycle")
		}
		return append(args, opts.ExtraArgs...)
	})
	if err != nil {
		return nil, err
	}
	client, err := api.NewClient(api.Config{Address: baseURL})
	if err != nil {
		_, _ = child.Stop(stopGrace)
		return nil, fmt.Errorf("start prometheus: api client: %w", err)
	}
	return &Prometheus{URL: baseURL, Dir: dir, API: v1.NewAPI(client), server: server{child}}, nil
}

// The types below mirror only the parts of prometheus.yml we generate;
// importing Prometheus' own config package would drag its server
// dependencies into the module.
type promConfig struct {
	Global        promGlobal          `json:"global"`
	RuleFiles     []string            `json:"rule_files,omitempty"`
	ScrapeConfigs []promScrapeConfig  `json:"scrape_configs,omitempty"`
	Alerting      *promAlertingConfig `json:"alerting,omitempty"`
}

type promGlobal struct {
	ScrapeInterval     string `json:"scrape_interval"`
	ScrapeTimeout      string `json:"scrape_timeout"`
	EvaluationInterval string `json:"evaluation_interval"`
}

type promScrapeConfig struct {
	JobName        string             `json:"job_name"`
	ScrapeInterval string             `json:"scrape_interval,omitempty"`
	ScrapeTimeout  string             `json:"scrape_timeout,omitempty"`
	MetricsPath    string             `json:"metrics_path,omitempty"`
	Scheme         string             `json:"scheme,omitempty"`
	Authorization  *promAuthorization `json:"authorization,omitempty"`
	TLSConfig      *promTLSConfig     `json:"tls_config,omitempty"`
	StaticConfigs  []promStaticConfig `json:"static_configs"`
}

type promAuthorization struct {
	Type        string `json:"type"`
	Credentials string `json:"credentials"`
}

type promTLSConfig struct {
	CAFile             string `json:"ca_file,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
}

type promStaticConfig struct {
	Targets []string `json:"targets"`
}

type promAlertingConfig struct {
	Alertmanagers []promAlertmanagerConfig `json:"alertmanagers"`
}

type promAlertmanagerConfig struct {
	APIVersion    string             `json:"api_version"`
	Scheme        string             `json:"scheme"`
	PathPrefix    string             `json:"path_prefix,omitempty"`
	Timeout       string             `json:"timeout"`
	StaticConfigs []promStaticConfig `json:"static_configs"`
}

// writePromConfig writes the rule files and prometheus.yml into dir and
// returns the config path.
func writePromConfig(dir string, opts PromOptions) (string, error) {
	scrape := cmp.Or(opts.ScrapeInterval, defaultInterval)
	eval := cmp.Or(opts.EvaluationInterval, defaultInterval)
	cfg := promConfig{Global: promGlobal{
		ScrapeInterval:     model.Duration(scrape).String(),
		ScrapeTimeout:      model.Duration(scrape).String(),
		EvaluationInterval: model.Duration(eval).String(),
	}}

	if len(opts.RuleFiles) > 0 {
		rulesDir := filepath.Join(dir, "rules")
		if err := os.Mkdir(rulesDir, 0o755); err != nil {
			return "", fmt.Errorf("write rules: %w", err)
		}
		names := make([]string, 0, len(opts.RuleFiles))
		for name := range opts.RuleFiles {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if name == "" || name == "." || name == ".." || filepath.Base(name) != name {
				return "", fmt.Errorf("rule file name %q: want a plain file name", name)
			}
			path := filepath.Join(rulesDir, name)
			if err := os.WriteFile(path, []byte(opts.RuleFiles[name]), 0o644); err != nil {
				return "", fmt.Errorf("write rule file: %w", err)
			}
			cfg.RuleFiles = append(cfg.RuleFiles, path)
		}
	}

	for _, sc := range opts.ScrapeConfigs {
		if sc.JobName == "" {
			return "", fmt.Errorf("scrape config for %v: job name is empty", sc.Targets)
		}
		psc := promScrapeConfig{
			JobName:       sc.JobName,
			MetricsPath:   sc.MetricsPath,
			Scheme:        sc.Scheme,
			StaticConfigs: []promStaticConfig{{Targets: sc.Targets}},
		}
		if sc.ScrapeInterval > 0 {
			psc.ScrapeInterval = model.Duration(sc.ScrapeInterval).String()
			psc.ScrapeTimeout = psc.ScrapeInterval
		}
		if sc.BearerToken != "" {
			psc.Authorization = &promAuthorization{Type: "Bearer", Credentials: sc.BearerToken}
		}
		if sc.CAFile != "" || sc.InsecureSkipVerify {
			psc.TLSConfig = &promTLSConfig{CAFile: sc.CAFile, InsecureSkipVerify: sc.InsecureSkipVerify}
		}
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, psc)
	}

	if len(opts.AlertmanagerURLs) > 0 {
		cfg.Alerting = &promAlertingConfig{}
		for _, raw := range opts.AlertmanagerURLs {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				return "", fmt.Errorf("alertmanager URL %q: want scheme://host:port[/prefix]", raw)
			}
			cfg.Alerting.Alertmanagers = append(cfg.Alerting.Alertmanagers, promAlertmanagerConfig{
				APIVersion:    "v2",
				Scheme:        u.Scheme,
				PathPrefix:    u.Path,
				Timeout:       "5s",
				StaticConfigs: []promStaticConfig{{Targets: []string{u.Host}}},
			})
		}
	}

	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("render prometheus.yml: %w", err)
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("write prometheus.yml: %w", err)
	}
	return path, nil
}

// Query evaluates an instant query now and returns its vector result; any
// other result type is an error, since tests compare series.
func (p *Prometheus) Query(ctx context.Context, expr string) (model.Vector, error) {
	val, _, _, err := p.API.Query(ctx, expr, time.Now())
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", expr, err)
	}
	vec, ok := val.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("query %q: result is a %s, want vector", expr, val.Type())
	}
	return vec, nil
}

// WaitForQuery evaluates expr until pred accepts the result or ctx ends.
// Scrapes and rule evaluations are periodic, so a single query right after
// a change would race them.
func (p *Prometheus) WaitForQuery(ctx context.Context, expr string, pred func(model.Vector) bool) (model.Vector, error) {
	return poll(ctx, fmt.Sprintf("wait for query %q", expr), func() (model.Vector, bool, error) {
		vec, err := p.Query(ctx, expr)
		return vec, err == nil && pred(vec), err
	})
}

// WaitForAlert polls /api/v1/alerts until an alert named name is in state
// (any state if empty) and carries every label in match.
func (p *Prometheus) WaitForAlert(ctx context.Context, name string, state v1.AlertState, match map[string]string) (v1.Alert, error) {
	var seen []v1.Alert
	what := fmt.Sprintf("wait for alert %s state=%q labels=%v", name, state, match)
	alert, err := poll(ctx, what, func() (v1.Alert, bool, error) {
		res, err := p.API.Alerts(ctx)
		if err != nil {
			return v1.Alert{}, false, fmt.Errorf("alerts: %w", err)
		}
		seen = res.Alerts
		for _, a := range res.Alerts {
			if alertMatches(a, name, state, match) {
				return a, true, nil
			}
		}
		return v1.Alert{}, false, nil
	})
	if err != nil {
		return v1.Alert{}, fmt.Errorf("%w; alerts seen: %+v", err, seen)
	}
	return alert, nil
}

func alertMatches(a v1.Alert, name string, state v1.AlertState, match map[string]string) bool {
	if string(a.Labels[model.AlertNameLabel]) != name {
		return false
	}
	if state != "" && a.State != state {
		return false
	}
	for k, v := range match {
		if string(a.Labels[model.LabelName(k)]) != v {
			return false
		}
	}
	return true
}

// pollInterval is short relative to the 1s scrape/evaluation interval.
const pollInterval = 100 * time.Millisecond

// poll calls try until it reports done or ctx ends. On timeout the error
// carries the last result and error, which is what explains the timeout.
func poll[T any](ctx context.Context, what string, try func() (T, bool, error)) (T, error) {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		last, done, lastErr := try()
		if done {
			return last, nil
		}
		select {
		case <-ctx.Done():
			var zero T
			return zero, fmt.Errorf("%s: %w (last result: %v, last error: %v)", what, ctx.Err(), last, lastErr)
		case <-tick.C:
		}
	}
}
