package stack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/responder/action"
	"github.com/herd-k8s/herd/responder/measure"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/proc"
)

// ResponderConfig is the stack's responder's --config: acting unless
// dryRun, every guard at its default, evidence from the stack's Prometheus
// with the mixin's rate window.
func ResponderConfig(promURL, rateWindow string, dryRun bool, holdDown time.Duration) string {
	return fmt.Sprintf(`dryRun: %v
prometheus: {url: %q, timeout: 5s, rateWindow: %s}
actions:
  isolate: {ttl: 30m, holdDown: %s}
`, dryRun, promURL, rateWindow, model.Duration(holdDown))
}

// MeasurementConfig is the responder --config block that turns the APF
// measurement on (its default clients), or nothing when on is false.
func MeasurementConfig(on bool) string {
	if !on {
		return ""
	}
	return "measurement: {enabled: true}\n"
}

// ResponderOptions say how StartResponder runs one `herd responder`
// replica.
type ResponderOptions struct {
	// Name is its leader-election identity and names its files; default
	// herd-responder-0.
	Name string
	// Config is its --config YAML.
	Config string
	// LeaseDuration is the leader Lease's duration (the renew deadline is
	// three quarters of it); default 10s.
	LeaseDuration time.Duration
	// RetryPeriod is how often a follower tries to take the Lease; default 1s.
	RetryPeriod time.Duration
	// SweepInterval is --sweep-interval; default 2s.
	SweepInterval time.Duration
	// LogLevel is --log.level; default info.
	LogLevel string
	// Addr is the address to listen on; default a free loopback port.
	Addr string
}

// Responder is one running `herd responder` replica, as the responder's
// service account, with bearer-token auth (AlertmanagerToken).
type Responder struct {
	Name  string
	URL   string
	Token string
	Proc  *proc.Process
}

// StartResponder starts a responder replica and returns once it serves
// (/healthz); whether it leads is Ready's to say. Close stops it.
func (s *Stack) StartResponder(ctx context.Context, o ResponderOptions) (*Responder, error) {
	if o.Name == "" {
		o.Name = "herd-responder-0"
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 10 * time.Second
	}
	if o.RetryPeriod == 0 {
		o.RetryPeriod = time.Second
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = 2 * time.Second
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	bin, err := s.herdBin(ctx)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := s.CP.Kubeconfig(ResponderIdentity)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(s.Dir, o.Name+".yaml")
	if err := os.WriteFile(cfg, []byte(o.Config), 0o644); err != nil {
		return nil, fmt.Errorf("start responder %s: %w", o.Name, err)
	}
	token := filepath.Join(s.Dir, "responder-token")
	if err := os.WriteFile(token, []byte(AlertmanagerToken+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("start responder %s: %w", o.Name, err)
	}
	server := proc.Server{
		Name: o.Name, Bin: bin,
		Args: func(addr string) []string {
			return []string{"responder",
				"--web.listen-address=" + addr,
				"--web.bearer-token-file=" + token,
				"--config=" + cfg,
				"--kubeconfig=" + kubeconfig,
				"--leader-election.namespace=herd",
				"--leader-election.identity=" + o.Name,
				"--leader-election.lease-duration=" + o.LeaseDuration.String(),
				"--leader-election.renew-deadline=" + (o.LeaseDuration * 3 / 4).String(),
				"--leader-election.retry-period=" + o.RetryPeriod.String(),
				"--sweep-interval=" + o.SweepInterval.String(),
				"--log.level=" + o.LogLevel,
			}
		},
		LogPath:   filepath.Join(s.Dir, o.Name+".log"),
		Options:   proc.Options{Dir: s.Dir},
		ReadyPath: "/healthz",
	}
	if o.Addr != "" {
		// Others were told this address: no second attempt elsewhere.
		server.Reserve = func() (string, error) { return o.Addr, nil }
	}
	p, addr, err := proc.StartServer(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("start herd responder: %w", err)
	}
	s.track(p)
	return &Responder{Name: o.Name, URL: "http://" + addr, Token: AlertmanagerToken, Proc: p}, nil
}

// Ready reports whether the replica says it leads (/readyz 200).
func (r *Responder) Ready(ctx context.Context) bool {
	return herdtest.Status(ctx, r.URL+"/readyz") == http.StatusOK
}

// Post sends an Alertmanager payload to /alerts, as Alertmanager does,
// and returns the status.
func (r *Responder) Post(ctx context.Context, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/alerts", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+r.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Decision is one entry of the responder's /debug/actions: the
// responder's own type.
type Decision = action.Decision

// Decisions reads /debug/actions, oldest first (the responder keeps its
// last 200).
func (r *Responder) Decisions(ctx context.Context) ([]Decision, error) {
	page, err := debugPage[struct{ Decisions []Decision }](ctx, r.URL+"/debug/actions")
	return page.Decisions, err
}

// debugPage decodes one of the responder's JSON debug pages.
func debugPage[T any](ctx context.Context, url string) (T, error) {
	var page T
	err := herdtest.GetJSON(ctx, url, &page)
	return page, err
}

// TriageFinding and TriageReport are /debug/triage's view of a triage:
// the responder's own types.
type (
	TriageFinding = action.Finding
	TriageReport  = action.TriageReport
)

// Triage reads /debug/triage.
func (r *Responder) Triage(ctx context.Context) ([]TriageReport, error) {
	page, err := debugPage[struct{ Reports []TriageReport }](ctx, r.URL+"/debug/triage")
	return page.Reports, err
}

// Measurement is the replica's /debug/measurement: where each measurement
// FlowSchema goes, or why it has none.
func (r *Responder) Measurement(ctx context.Context) (measure.Status, error) {
	return debugPage[measure.Status](ctx, r.URL+"/debug/measurement")
}

// Metric sums the samples of one metric in the replica's exposition whose
// labels contain every pair in match ("k=v").
func (r *Responder) Metric(ctx context.Context, name string, match ...string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s/metrics: %w", r.URL, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			k, v, _ := strings.Cut(m, "=")
			ok = ok && strings.Contains(line, k+`="`+v+`"`)
		}
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += f
		}
	}
	return sum, sc.Err()
}
