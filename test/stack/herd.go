package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/test/proc"
)

// startExporter runs `herd exporter` as its service account, with the
// audit listener on the port the apiserver's webhook was given. The audit
// listener takes events without authentication: everything is on loopback,
// and the apiserver sends its webhook token only over https.
func (s *Stack) startExporter(ctx context.Context, auditPort int) error {
	kubeconfig, err := s.CP.Kubeconfig(exporterIdentity)
	if err != nil {
		return err
	}
	// The accounting window (herd_relisting_instances, top-K) is as short
	// as herd allows, as the mixin's windows are shortened for the demo.
	const window = "1m"
	cfg := filepath.Join(s.Dir, "exporter.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "accounting: {window: %s}\n", window), 0o644); err != nil {
		return fmt.Errorf("start exporter: %w", err)
	}
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	web := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.start("herd-exporter", s.opts.HerdBin, []string{"exporter",
		"--web.listen-address=" + web,
		"--audit.listen-address=127.0.0.1:" + strconv.Itoa(auditPort),
		"--audit.insecure",
		"--kubeconfig=" + kubeconfig,
		"--config=" + cfg,
		"--cluster.ghost-grace=1m",
	})
	if err != nil {
		return err
	}
	s.ExporterURL = "http://" + web
	if err := waitHTTP(ctx, p, s.ExporterURL+"/readyz", time.Minute); err != nil {
		return fmt.Errorf("start herd exporter: %w\n%s", err, p.Tail(20))
	}
	return nil
}

// ResponderConfig is the responder's --config: acting unless dryRun, every
// guard at its default, evidence from the stack's Prometheus with the
// mixin's rate window.
func ResponderConfig(promURL, rateWindow string, dryRun bool, holdDown time.Duration) string {
	return fmt.Sprintf(`dryRun: %v
prometheus: {url: %q, timeout: 5s, rateWindow: %s}
actions:
  isolate: {ttl: 30m, holdDown: %s}
`, dryRun, promURL, rateWindow, model.Duration(holdDown))
}

// startResponder runs `herd responder` as its service account, with
// Alertmanager's bearer token and a fast sweep. Prometheus starts after it,
// so its URL is reserved here.
func (s *Stack) startResponder(ctx context.Context) error {
	kubeconfig, err := s.CP.Kubeconfig(responderIdentity)
	if err != nil {
		return err
	}
	promPort, err := proc.FreePort()
	if err != nil {
		return err
	}
	s.PrometheusURL = "http://127.0.0.1:" + strconv.Itoa(promPort)
	cfg := filepath.Join(s.Dir, "responder.yaml")
	body := ResponderConfig(s.PrometheusURL, fmt.Sprint(s.Mixin["rateWindow"]), s.opts.DryRun, s.opts.IsolateHoldDown)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		return fmt.Errorf("start responder: %w", err)
	}
	token := filepath.Join(s.Dir, "responder-token")
	if err := os.WriteFile(token, []byte(alertmanagerToken+"\n"), 0o600); err != nil {
		return fmt.Errorf("start responder: %w", err)
	}
	port, err := proc.FreePort()
	if err != nil {
		return err
	}
	web := "127.0.0.1:" + strconv.Itoa(port)
	p, err := s.start("herd-responder", s.opts.HerdBin, []string{"responder",
		"--web.listen-address=" + web,
		"--web.bearer-token-file=" + token,
		"--config=" + cfg,
		"--kubeconfig=" + kubeconfig,
		"--leader-election.namespace=herd",
		"--leader-election.identity=herd-responder-0",
		"--leader-election.lease-duration=10s",
		"--leader-election.renew-deadline=7s",
		"--leader-election.retry-period=1s",
		"--sweep-interval=2s",
	})
	if err != nil {
		return err
	}
	s.ResponderURL = "http://" + web
	if err := waitHTTP(ctx, p, s.ResponderURL+"/healthz", 30*time.Second); err != nil {
		return fmt.Errorf("start herd responder: %w\n%s", err, p.Tail(20))
	}
	return nil
}

// Decision is one entry of the responder's /debug/actions.
type Decision struct {
	Time     time.Time         `json:"time"`
	Action   string            `json:"action"`
	Alert    string            `json:"alert"`
	Status   string            `json:"status"`
	Target   string            `json:"target"`
	Result   string            `json:"result"`
	Guard    string            `json:"guard"`
	Reason   string            `json:"reason"`
	Labels   map[string]string `json:"labels"`
	DryRun   bool              `json:"dryRun"`
	Error    string            `json:"error"`
	Evidence []struct {
		Query     string  `json:"query"`
		Value     float64 `json:"value"`
		Series    int     `json:"series"`
		Confirmed bool    `json:"confirmed"`
	} `json:"evidence"`
	DurationMS float64 `json:"durationMs"`
}

// Decisions reads the responder's /debug/actions, oldest first.
func (s *Stack) Decisions(ctx context.Context) ([]Decision, error) {
	var page struct {
		Decisions []Decision `json:"decisions"`
	}
	if err := getJSON(ctx, s.ResponderURL+"/debug/actions", &page); err != nil {
		return nil, err
	}
	return page.Decisions, nil
}

func getJSON(ctx context.Context, url string, into any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("GET %s: decode: %w", url, err)
	}
	return nil
}
