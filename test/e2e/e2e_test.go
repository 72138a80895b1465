// Package e2e runs herd against a real kube-apiserver and etcd
// (test/controlplane): the requests are real, the audit events are the
// apiserver's own, and herd's metrics are checked to the exact count. The
// scenario tests run on test/stack (Prometheus with the mixin,
// Alertmanager, the responder binary) and are split into steps that can
// run alone; docs/development.md maps each SPEC section to them.
//
// The files, by concern:
//
//	exporter_*_test.go    the exporter: exact counts, the cluster view, RBAC
//	mixin_test.go         the mixin's alerts and dashboard on real Prometheus
//	responder_test.go     the responder's guards, HA and undo on the real stack
//	drill*_test.go        the five incident drills
//	alerts_test.go        Alertmanager's side: payloads, the Service in front of the replicas, the tap
//	kube_test.go          reading what herd did from the apiserver and its audit log
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/nodesim"
	"github.com/herd-k8s/herd/test/stack"
)

// TestMain removes the herd binary the responder tests build.
func TestMain(m *testing.M) { os.Exit(herdtest.Main(m)) }

// The e2e scenarios' stack: the mixin with short windows (mixinOverrides),
// an in-process exporter with a 20 s accounting window, and Prometheus and
// Alertmanager evaluating and delivering every second or two.
const (
	// mixinWindow is the exporter's accounting window.
	mixinWindow = 20 * time.Second
	mixinJob    = stack.ExporterJob
	// stormEvery is how often a kubelet in a relist loop relists its pods.
	stormEvery = 2 * time.Second
	// respLease is the responder replicas' Lease duration.
	respLease = 4 * time.Second
	// ghostName and ghostIP are the ghost kubelet of incident 000: no
	// Node, an address no Node has.
	ghostName = "old-worker-7"
	ghostIP   = "10.99.0.7"
)

// mixinOverrides are the e2e scenarios' changes to the stack's DemoMixin
// (a 20 s rate window and `for`s of seconds). Thresholds keep their
// production values: the scenarios are sized to cross them (12 kubelets in
// a relist loop against relistStormMinInstances 10, ~6 relists/s against
// relistStormMinRate 0.5). The responder's own alerts are off: the tests
// run no responder that Prometheus scrapes.
var mixinOverrides = map[string]any{
	"relistStormFor":       "15s",
	"ghostNodeClientFor":   "10s",
	"auditStalledFor":      "10s",
	"auditRejectedFor":     "10s",
	"herdResponderEnabled": false,
}

// rateWindow is the mixin's rate window in every scenario (DemoMixin's).
var rateWindow = stack.DemoMixin()["rateWindow"].(string)

// metadataPolicy is an audit Policy that logs, at Metadata level and
// without RequestReceived, the requests of groups and users, and nothing
// else: every event herd sees comes from a request the test made.
func metadataPolicy(groups, users []string) string {
	var b strings.Builder
	b.WriteString("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n")
	if len(groups) > 0 {
		fmt.Fprintf(&b, "- level: Metadata\n  userGroups: [%s]\n", quoteAll(groups))
	}
	if len(users) > 0 {
		fmt.Fprintf(&b, "- level: Metadata\n  users: [%s]\n", quoteAll(users))
	}
	b.WriteString("- level: None\n")
	return b.String()
}

func quoteAll(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// scenarioExporter is the in-process exporter of the scenario stacks.
var scenarioExporter = stack.ExporterOptions{InProcess: true, Window: mixinWindow, GhostGrace: time.Second}

// startExporter runs an in-process exporter until the test ends, with its
// audit listener on auditAddr (a free port when empty).
func startExporter(t *testing.T, cfg config.Config, opts exporter.Options, auditAddr string) *stack.InProcessExporter {
	t.Helper()
	opts.Config = cfg
	e, err := stack.RunExporter(opts, auditAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("exporter: %v", err)
		}
	})
	return e
}

// startReplica starts a responder replica as the scenarios run them: a
// short Lease, a fast sweep, debug logs.
func startReplica(ctx context.Context, t *testing.T, s *stack.Stack, name, cfg string) *stack.Responder {
	t.Helper()
	return startReplicaWith(ctx, t, s, stack.ResponderOptions{Name: name, Config: cfg})
}

// startReplicaWith is startReplica with the caller's options (a reserved
// address, say); the scenarios' Lease, sweep and log level fill the rest.
func startReplicaWith(ctx context.Context, t *testing.T, s *stack.Stack, o stack.ResponderOptions) *stack.Responder {
	t.Helper()
	o.LeaseDuration, o.RetryPeriod, o.SweepInterval, o.LogLevel = respLease, 500*time.Millisecond, time.Second, "debug"
	r, err := s.StartResponder(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// decisions is the replica's /debug/actions (nil while it does not answer,
// as when it was killed).
func decisions(t *testing.T, r *stack.Responder) []stack.Decision {
	t.Helper()
	ds, err := r.Decisions(context.Background())
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax) || errors.As(err, &typ):
		t.Errorf("/debug/actions: %v", err)
	case err != nil:
		t.Logf("/debug/actions: %v", err)
	}
	return ds
}

// metric is Responder.Metric; an error fails the test and reads 0.
func metric(t *testing.T, r *stack.Responder, name string, match ...string) float64 {
	t.Helper()
	v, err := r.Metric(context.Background(), name, match...)
	if err != nil {
		t.Errorf("%s: %v", name, err)
	}
	return v
}

func matching(ds []stack.Decision, pred func(stack.Decision) bool) []stack.Decision {
	var out []stack.Decision
	for _, d := range ds {
		if pred(d) {
			out = append(out, d)
		}
	}
	return out
}

// loops runs request loops in the background and keeps their tallies.
type loops struct {
	wg      sync.WaitGroup
	mu      sync.Mutex
	tallies map[string]nodesim.Tally
}

func (l *loops) run(ctx context.Context, name string, every time.Duration, fn func(context.Context) (nodesim.Result, error)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tally, _ := nodesim.Repeat(ctx, every, 0, fn)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.tallies == nil {
			l.tallies = map[string]nodesim.Tally{}
		}
		prev := l.tallies[name]
		if prev.Codes == nil {
			prev.Codes = map[int]int{}
		}
		prev.Requests += tally.Requests
		prev.Errors += tally.Errors
		for c, n := range tally.Codes {
			prev.Codes[c] += n
		}
		l.tallies[name] = prev
	}()
}

func (l *loops) tally(name string) nodesim.Tally {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tallies[name]
}

// series is a gathered sample keyed by "name{l1=v1,l2=v2}" with sorted
// labels, as test/auditcount keys its counts; histograms contribute
// name_count.
type series = auditcount.Series

func gather(t *testing.T, e *exporter.Exporter) series {
	t.Helper()
	families, err := e.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := series{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "herd_") || strings.HasPrefix(mf.GetName(), "herd_scrape_") || mf.GetName() == "herd_build_info" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(labels)
			key := mf.GetName() + "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return s
}

// sum adds the samples of name in s whose labels include every one of
// match ("k=v").
func sum(s series, name string, match ...string) float64 {
	total := 0.0
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && (strings.Contains(k, "{"+m+",") || strings.Contains(k, ","+m+",") || strings.Contains(k, ","+m+"}") || strings.Contains(k, "{"+m+"}"))
		}
		if ok {
			total += v
		}
	}
	return total
}
