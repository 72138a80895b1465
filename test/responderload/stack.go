package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herd-k8s/herd/responder/evidence"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/promstack"
	herdstack "github.com/herd-k8s/herd/test/stack"
)

// jobName is the scrape job the generated mixin rules select (job="herd-exporter").
const jobName = herdstack.ExporterJob

// stack is test/stack's stack as the load test runs it, with the stale
// kubelets' audit feeder and the one responder replica it measures.
type stack struct {
	*herdstack.Stack
	cfg         Config
	responder   *herdstack.Responder
	feeder      *feeder
	promVersion string

	nodes   []node // every Node; the first cfg.Stale have a stale kubelet
	stopped sync.Once
}

type node struct{ name, ip string }

func (s *stack) stale() []node   { return s.nodes[:s.cfg.Stale] }
func (s *stack) healthy() []node { return s.nodes[s.cfg.Stale:] }

// findBinaries fails early, with how to get them, when a binary is missing.
func findBinaries() (prometheus string, err error) {
	if _, err := controlplane.FindBinaries(); err != nil {
		return "", err // names `make controlplane`
	}
	p, err := promstack.LookPrometheus()
	if err != nil {
		return "", fmt.Errorf("%w; `make deps` installs it", err)
	}
	return p, nil
}

// startStack brings up the control plane with the Nodes, the exporter
// (no audit webhook: the feeder posts stale kubelets' events), Prometheus
// with the mixin's shipped rules and no Alertmanager, and the responder
// once Prometheus holds herd:stale_kubelet:max for every stale node; it
// returns once the responder leads.
func startStack(ctx context.Context, c Config, herdBin, promBin string, log io.Writer) (s *stack, err error) {
	s = &stack{cfg: c}
	defer func() {
		if err != nil {
			s.stop()
			s = nil
		}
	}()
	for i := 1; i <= c.Nodes; i++ {
		s.nodes = append(s.nodes, node{herdstack.NodeName(i), herdstack.NodeIP(i)})
	}
	out, _ := exec.CommandContext(ctx, promBin, "--version").CombinedOutput()
	s.promVersion, _, _ = strings.Cut(string(out), "\n")

	fmt.Fprintf(log, "responder-load: control plane (kube-apiserver %s + etcd), %d Nodes, herd exporter, Prometheus ...\n", controlplane.Version, c.Nodes)
	s.Stack, err = herdstack.Start(ctx, herdstack.Options{
		Dir: c.Dir, Log: log, Root: c.Root, HerdBin: herdBin,
		Nodes:          c.Nodes,
		NoAuditWebhook: true,
		Exporter: herdstack.ExporterOptions{
			Config: fmt.Sprintf("accounting:\n  window: 1m\n  stalePodRelists: 6\ncluster:\n  maxStaleSeries: %d\n", max(200, c.Stale)),
			Args:   []string{"--log.level=warn"},
		},
		// The mixin's generated recording and alerting rules, rate window 5m.
		ShippedRules:   true,
		ScrapeInterval: c.ScrapeInterval,
		NoAlertmanager: true,
		NoResponder:    true,
	})
	if err != nil {
		return s, err
	}
	s.feeder = newFeeder(s.AuditURL, s.stale())
	// Enough pod relists for accounting.stalePodRelists at once, then one
	// per node every few seconds so that they stay stale in the window.
	if err := s.feeder.post(ctx, 8); err != nil {
		return s, err
	}
	s.feeder.start(ctx, 5*time.Second)

	fmt.Fprintf(log, "responder-load: waiting for herd:stale_kubelet:max on %d nodes in Prometheus ...\n", c.Stale)
	q, err := evidence.NewPrometheus(s.PrometheusURL, 5*time.Second, nil)
	if err != nil {
		return s, err
	}
	if err := herdtest.Poll(ctx, 3*time.Minute, "herd:stale_kubelet:max for every stale node in Prometheus", func(ctx context.Context) error {
		if err := s.feeder.failed(); err != nil {
			return err
		}
		v, err := q.Query(ctx, "count(herd:stale_kubelet:max == 1)")
		if err != nil {
			return err
		}
		if len(v) != 1 || int(v[0].Value) != c.Stale {
			return fmt.Errorf("count(herd:stale_kubelet:max == 1) = %v, want %d", v, c.Stale)
		}
		return nil
	}); err != nil {
		return s, fmt.Errorf("%w\n%s", err, s.Tails(10, false))
	}

	// Acting, one replica, guards that let every stale node be cordoned.
	s.responder, err = s.StartResponder(ctx, herdstack.ResponderOptions{
		Name: "responderload",
		Config: fmt.Sprintf(`dryRun: false
prometheus: {url: %q, timeout: 5s, rateWindow: 5m}
guards:
  maxUnschedulableFraction: %g
  maxActionsPerHour: {cordon: 100000}
`, s.PrometheusURL, c.Fraction),
	})
	if err != nil {
		return s, err
	}
	return s, herdtest.Poll(ctx, time.Minute, "the responder to lead", func(ctx context.Context) error {
		if !s.responder.Ready(ctx) {
			return fmt.Errorf("/readyz is not 200\n%s", s.responder.Proc.Tail(10))
		}
		return nil
	})
}

// stop ends every process the run started, newest first.
func (s *stack) stop() {
	s.stopped.Do(func() {
		if s.feeder != nil {
			s.feeder.stop()
		}
		if s.Stack != nil {
			_ = s.Close()
		}
	})
}

// feeder posts what the apiserver's audit webhook would send for kubelets
// in a pod relist loop: consistent LISTs of their node's pods, as the
// kubelet's identity from the node's address.
type feeder struct {
	url      string
	nodes    []node
	seq      atomic.Uint64
	stopLoop func()
	mu       sync.Mutex
	err      error
}

func newFeeder(url string, nodes []node) *feeder { return &feeder{url: url, nodes: nodes} }

// post sends perNode LIST events for every node, spread over the last
// perNode seconds, in one EventList.
func (f *feeder) post(ctx context.Context, perNode int) error {
	now := time.Now().UTC()
	var b bytes.Buffer
	b.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[`)
	n := 0
	for i := perNode - 1; i >= 0; i-- {
		ts := now.Add(-time.Duration(i) * time.Second)
		for _, nd := range f.nodes {
			if n > 0 {
				b.WriteByte(',')
			}
			n++
			id := f.seq.Add(1)
			fmt.Fprintf(&b, `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"%08x-0000-4000-8000-%012x","stage":"ResponseComplete",`+
				`"requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%%3D%s","verb":"list",`+
				`"user":{"username":"system:node:%s","groups":["system:nodes","system:authenticated"]},"sourceIPs":[%q],`+
				`"userAgent":"kubelet/%s (linux/amd64) kubernetes/0000000","objectRef":{"resource":"pods","apiVersion":"v1"},`+
				`"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":%q,"stageTimestamp":%q}`,
				uint32(id>>32), id, nd.name, nd.name, nd.ip, controlplane.Version,
				ts.Add(-20*time.Millisecond).Format(time.RFC3339Nano), ts.Format(time.RFC3339Nano))
		}
	}
	b.WriteString("]}")
	body, err := herdtest.PostAudit(ctx, f.url, b.Bytes())
	if err != nil {
		return err
	}
	if want := fmt.Sprintf(`"accounted":%d,`, n); !bytes.Contains(body, []byte(want)) {
		return fmt.Errorf("post audit events: herd answered %s, want %s", bytes.TrimSpace(body), want)
	}
	return nil
}

// start posts one event per node every interval until stop.
func (f *feeder) start(ctx context.Context, every time.Duration) {
	f.stopLoop = herdtest.Background(ctx, func(ctx context.Context) {
		herdtest.Every(ctx, every, func() {
			if err := f.post(ctx, 1); err != nil && ctx.Err() == nil {
				f.mu.Lock()
				f.err = err
				f.mu.Unlock()
			}
		})
	})
}

func (f *feeder) failed() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *feeder) stop() {
	if f.stopLoop != nil {
		f.stopLoop()
	}
}
