package hollow_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter"
	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/test/auditcount"
	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hollow"
	"github.com/herd-k8s/herd/test/proc"
	"github.com/herd-k8s/herd/test/stack"
)

// realAgents is herd's whole stack (test/stack: the real control plane,
// herd's exporter in process, Prometheus with the mixin, Alertmanager, the
// responder) with hollow nodes — the real kubelet and kube-proxy — each in
// its own network namespace, and a tee on the audit webhook so that every
// scenario can compare herd with an independent count over the apiserver's
// audit log of the same run (test/auditcount).
type realAgents struct {
	s       *stack.Stack
	ex      *exporter.Exporter
	tee     *auditcount.Tee
	logPath string
	net     *hollow.Network
	nodes   *hollow.Cluster
	names   []string
	// revs are the cluster's revision as the test reads it, for the bounds
	// on what herd counts too large by revision.
	revs *auditcount.Revisions
	opts agentsOptions
}

type agentsOptions struct {
	// nodes is how many hollow nodes; listMode says which relist in LIST
	// mode (client-go < 1.35), the others by WatchList.
	nodes    int
	listMode func(i int) bool
	// podsPerNode are bound to each node, each mounting a ConfigMap and a
	// Secret of its own.
	podsPerNode int
	// mixin overrides the demo mixin's windows.
	mixin map[string]any
	// window is the exporter's accounting window; ghostGrace its ghost
	// grace; probe its revision read interval.
	window, ghostGrace, probe time.Duration
	// dryRun runs the responder in dry-run; the default acts.
	dryRun bool
}

// agentPrefix names the hollow nodes.
const agentPrefix = "hollow-"

// startRealAgents brings up the stack and the hollow nodes, and binds the
// pods. Everything stops when the test ends; a process left running fails
// it.
func startRealAgents(ctx context.Context, t *testing.T, o agentsOptions) *realAgents {
	t.Helper()
	checkNoChildrenLeft(t)
	if o.window == 0 {
		o.window = 2 * time.Minute
	}
	if o.ghostGrace == 0 {
		o.ghostGrace = ghostGrace
	}
	if o.probe == 0 {
		o.probe = 2 * time.Second
	}
	if o.listMode == nil {
		o.listMode = func(int) bool { return false }
	}
	dir := t.TempDir()
	a := &realAgents{logPath: filepath.Join(dir, "audit.log"), opts: o}
	var err error
	if a.net, err = hollow.NewNetwork(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.net.Close(); err != nil {
			t.Errorf("remove the hollow network: %v", err)
		}
	})
	var specs []hollow.NodeOptions
	for i := 1; i <= o.nodes; i++ {
		name := fmt.Sprintf("%s%d", agentPrefix, i)
		a.names = append(a.names, name)
		specs = append(specs, hollow.NodeOptions{Name: name, ListMode: o.listMode(i)})
	}
	a.tee = auditcount.NewTee("hollow-audit-token")
	t.Cleanup(a.tee.Close)
	a.s = stack.StartTest(ctx, t, stack.Options{
		AgentNodes:  a.names,
		AuditPolicy: nodeAgentsPolicy,
		Exporter:    stack.ExporterOptions{InProcess: true, Window: o.window, GhostGrace: o.ghostGrace, RevisionProbe: o.probe},
		Mixin:       o.mixin,
		DryRun:      o.dryRun,
		ControlPlane: func(co *controlplane.Options) {
			co.Address = a.net.Gateway().String()
			co.AuditLogPath = a.logPath
			a.tee.Wire(co)
		},
	})
	a.ex = a.s.Exporter.Exporter
	a.tee.Forward(a.ex.AuditHandler())
	a.revs = auditcount.SampleRevisions(t.Context(), a.s.Admin, 500*time.Millisecond)

	a.nodes, err = hollow.Start(ctx, a.s.CP, hollow.Options{Network: a.net, Nodes: specs, Dir: filepath.Join(dir, "nodes"),
		AfterRegistered: func(ctx context.Context) error { return herdKnowsNodes(ctx, a.ex, a.names) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.nodes.Stop)
	if o.podsPerNode > 0 {
		pods, err := hollow.CreatePods(ctx, a.s.Admin, podsNS, a.names, o.podsPerNode)
		if err != nil {
			t.Fatal(err)
		}
		if err := hollow.WaitPodsRunning(ctx, a.s.Admin, podsNS, pods); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.nodes.WaitLeases(ctx); err != nil {
		t.Fatal(err)
	}
	return a
}

// checkNoChildrenLeft fails the test when it leaves a child process
// running; registered first, it runs after every other cleanup.
func checkNoChildrenLeft(t *testing.T) {
	t.Helper()
	before, err := proc.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		after, err := proc.Children(os.Getpid())
		if err != nil {
			t.Error(err)
		}
		if len(after) > len(before) {
			t.Errorf("children left running: before %v, after %v", before, after)
		}
	})
}

// herdView is what herd reported at one instant, and the events it had
// been delivered by then.
type herdView struct {
	delivered map[auditcount.Key]bool
	series    auditcount.Series
	clients   []accounting.ClientView
	stale     map[string]string // node → reason
}

// view takes herd's counters, verdicts and clients while no audit batch is
// forwarded, after a revision read that started once forwarding stopped
// has completed: herd has then judged every request it was delivered, so
// what it says and the delivered events describe the same requests.
func (a *realAgents) view(t *testing.T) herdView {
	t.Helper()
	var v herdView
	var err error
	v.delivered = a.tee.Snapshot(func() {
		if err = a.waitRevisionReads(t.Context(), 2); err != nil {
			return
		}
		if v.series, err = auditcount.Gather(a.ex.Registry()); err != nil {
			return
		}
		v.clients = a.ex.Ledger().Clients(accounting.ClientFilter{})
		v.stale, err = a.staleKubelets()
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitRevisionReads waits until the exporter has completed n more revision
// reads.
func (a *realAgents) waitRevisionReads(ctx context.Context, n float64) error {
	start, err := a.metric("herd_cluster_revision_probes_total", "result", "ok")
	if err != nil {
		return err
	}
	return herdtest.Poll(ctx, 30*time.Second, "herd's revision reads", func(context.Context) error {
		now, err := a.metric("herd_cluster_revision_probes_total", "result", "ok")
		if err != nil || now < start+n {
			return fmt.Errorf("%g of %g more reads done (%v)", now-start, n, err)
		}
		return nil
	})
}

// metric sums herd's family name over the series with every label=value
// pair of match.
func (a *realAgents) metric(name string, match ...string) (float64, error) {
	mfs, err := a.ex.Registry().Gather()
	if err != nil {
		return 0, err
	}
	sum := 0.0
	for _, m := range herdtest.Matching(mfs, name, match...) {
		sum += herdtest.Value(m)
	}
	return sum, nil
}

// staleKubelets are herd_stale_kubelet's series: node → reason.
func (a *realAgents) staleKubelets() (map[string]string, error) {
	mfs, err := a.ex.Registry().Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, mf := range mfs {
		if mf.GetName() != "herd_stale_kubelet" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			out[labels["node"]] = labels["reason"]
		}
	}
	return out, nil
}

// compare checks herd against the independent count over the audit log:
// every counter exactly, but for the requests too large by revision, which
// must lie between what the test's own revision reads prove certain and
// what they leave possible (auditcount.FutureRevisions). It returns herd's
// view and the bounds.
func (a *realAgents) compare(t *testing.T, when string) (herdView, auditcount.FutureResult) {
	t.Helper()
	v := a.view(t)
	res := countDelivered(t, a.logPath, v.delivered, when)
	if len(v.delivered) == 0 {
		t.Fatalf("%s: nothing to compare: no event delivered", when)
	}
	const family = "herd_too_large_resource_version_total"
	diffs := auditcount.Diff(res.Series, v.series.Without(family, "detected_by", "revision"))
	if len(diffs) > 0 {
		t.Errorf("%s: herd differs from the independent count of the same %d events:\n%s\nindependent count:\n%s",
			when, len(v.delivered), strings.Join(diffs, "\n"), res.Series)
	}
	fut, err := auditcount.FutureRevisions(a.logPath, v.delivered, auditcount.NodeAgents, a.revs, a.opts.probe+5*time.Second,
		accounting.DefaultConfig().SeparateStorageResources)
	if err != nil {
		t.Fatal(err)
	}
	byRevision := 0.0
	seen := map[string]bool{}
	for k, got := range v.series {
		if !strings.HasPrefix(k, family+"{") || !strings.Contains(k, "detected_by=revision") {
			continue
		}
		seen[k] = true
		byRevision += got
		if b := fut.BySeries[k]; got < float64(b.Definite) || got > float64(b.Possible) {
			t.Errorf("%s: herd %s = %g, the audit log and the revision reads say %d to %d", when, k, got, b.Definite, b.Possible)
		}
	}
	for k, b := range fut.BySeries {
		if !seen[k] && b.Definite > 0 {
			t.Errorf("%s: herd has no %s; the audit log and the revision reads say at least %d", when, k, b.Definite)
		}
	}
	if len(diffs) == 0 {
		t.Logf("%s: herd equals the independent count: %d events, %d series, 0 different; %g too large by revision",
			when, len(v.delivered), len(res.Series), byRevision)
	}
	return v, fut
}

// tooLargeByIdentity sums herd's too-large requests (both kinds) per
// identity, from /debug/clients.
func tooLargeByIdentity(clients []accounting.ClientView) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range clients {
		for _, s := range c.Resources {
			out[c.Identity] += s.TooLarge
		}
	}
	return out
}

// alertsFiring lists herd's alerts firing in Prometheus.
func (a *realAgents) alertsFiring(ctx context.Context) ([]string, error) {
	v, err := a.s.Query(ctx, `ALERTS{alertstate="firing"}`)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range v {
		out = append(out, s.Metric.String())
	}
	sort.Strings(out)
	return out, nil
}

// actions lists the responder's decisions that are not noops.
func (a *realAgents) actions(ctx context.Context) ([]stack.Decision, error) {
	ds, err := a.s.Responder.Decisions(ctx)
	if err != nil {
		return nil, err
	}
	var out []stack.Decision
	for _, d := range ds {
		if d.Result != "noop" {
			out = append(out, d)
		}
	}
	return out, nil
}
