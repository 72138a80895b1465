package cluster

import (
	"bytes"
	"context"
	"flag"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/collector"
)

var update = flag.Bool("update", false, "rewrite testdata/*.prom from what the code exports now")

// account is one LIST from ip, the connection's address (sourceIPs [ip]).
func account(l *accounting.Ledger, user, ip, resource string, tooLarge bool, at time.Time) {
	code := int32(200)
	if tooLarge {
		code = 504
	}
	l.Account(from(ip, &audit.Event{AuditID: []byte(at.String() + user), Stage: audit.StageResponseComplete, Verb: []byte("list"),
		User: []byte(user), UserAgent: []byte("kubelet/v1.36.3"), Resource: []byte(resource),
		Code: code, TooLargeResourceVersion: tooLarge, StageTimestampNanos: at.UnixNano()}))
}

// from sets e's sourceIPs to [ip], as the decoder does for a direct connection.
func from(ip string, e *audit.Event) *audit.Event {
	e.SourceIP, e.SourceIPTail[0], e.NumSourceIPTail = []byte(ip), []byte(ip), 1
	return e
}

// syncedView is a View over nodes (fake clientset), synced, and the time
// that is past its ghost grace (1m).
func syncedView(t testing.TB, nodes ...k8sruntime.Object) (*View, time.Time) {
	t.Helper()
	v := New(fake.NewSimpleClientset(nodes...), Options{Grace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v.Start(ctx)
	for deadline := time.Now().Add(10 * time.Second); !v.Synced(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("view did not sync")
		}
	}
	return v, time.Now().Add(10 * time.Minute)
}

// judgedLedger is a ledger whose verdicts come from v, read at now.
func judgedLedger(t testing.TB, v *View, now time.Time, mod func(*accounting.Config)) *accounting.Ledger {
	t.Helper()
	cls, _ := classify.New(nil)
	cfg := accounting.DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	l, err := accounting.New(cfg, cls, v)
	if err != nil {
		t.Fatal(err)
	}
	l.SetClock(func() time.Time { return now })
	return l
}

// exposition is the text of every herd_ family but the scrape durations
// and the revision reads' (timing-dependent; TestRevisionReadsAndRewind and
// the collector's table test cover them).
func exposition(t *testing.T, reg *prometheus.Registry) []byte {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for _, mf := range families {
		name := mf.GetName()
		if !strings.HasPrefix(name, "herd_scrape_collector") && !strings.HasPrefix(name, "herd_cluster_revision") && name != "herd_cluster_view_restarts_total" {
			if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return buf.Bytes()
}

// TestVerdictSeries drives ghosts, stale kubelets and agents attributed by
// address through the ledger and herd's collectors with a real (informer)
// view, and compares the exposition with testdata/verdicts.prom exactly.
// The file was first recorded before the verdicts moved into the ledger's
// snapshot (the move changed nothing); its later diffs are the behaviour
// changes of trust, top-K per stream and shapes. The caps hold (one ghost
// series, one stale series, the worst). exporter/metrics_doc_test.go
// checks these families' names and labels against docs/metrics.md and
// lints them.
func TestVerdictSeries(t *testing.T) {
	v, later := syncedView(t, realisticNode(1), realisticNode(2), realisticNode(3))
	l := judgedLedger(t, v, later, func(c *accounting.Config) { c.TopK, c.MaxGhostSeries, c.MaxStaleSeries = 1, 1, 1 })
	first := later.Add(-9 * time.Minute) // old enough to be past the grace
	// Two ghost kubelets, the second more recent; three stale kubelets (two
	// too-large, one loop).
	account(l, "system:node:gone-a", "10.99.0.1", "pods", false, first)
	account(l, "system:node:gone-b", "10.99.0.2", "pods", false, first.Add(time.Second))
	for i, n := range []string{realisticNode(1).Name, realisticNode(2).Name} {
		for j := 0; j < 3+i; j++ {
			account(l, "system:node:"+n, "10.0.0."+string(rune('1'+i)), "runtimeclasses", true, first.Add(time.Duration(j)*time.Second))
		}
	}
	for j := 0; j < 6; j++ {
		account(l, "system:node:"+realisticNode(3).Name, "10.0.0.3", "pods", false, first.Add(time.Duration(j)*time.Second))
	}
	// cilium from node 1's address, and from an address no Node has (a ghost).
	for j := 0; j < 4; j++ {
		account(l, "system:serviceaccount:kube-system:cilium", "10.0.0.1", "pods", false, first.Add(time.Duration(j)*time.Second))
		account(l, "system:serviceaccount:kube-system:cilium", "10.77.0.1", "pods", false, first.Add(time.Duration(j)*time.Second))
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.New(collector.Sources{Ledger: l, Cluster: v}, slog.New(slog.DiscardHandler)))
	got := exposition(t, reg)
	if *update {
		if err := os.WriteFile("testdata/verdicts.prom", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/verdicts.prom")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("exposition differs from testdata/verdicts.prom (go test -update to rewrite it):\n%s", got)
	}
}

// TestStaleAndGhostVerdicts: the stale thresholds (SPEC §3.3) apply to
// kubelets of existing Nodes only, and a ghost that went quiet for longer
// than the window stops being one (its alert must resolve).
func TestStaleAndGhostVerdicts(t *testing.T) {
	v, later := syncedView(t, realisticNode(1), realisticNode(2), realisticNode(3))
	l := judgedLedger(t, v, later, nil)
	first := later.Add(-9 * time.Minute)
	kubelet := func(i int) string { return "system:node:" + realisticNode(i).Name }
	for j := 0; j < 3; j++ { // node 1: 3 too-large answers
		account(l, kubelet(1), "10.0.0.1", "runtimeclasses", true, first.Add(time.Duration(j)*time.Second))
	}
	for j := 0; j < 6; j++ { // node 2: 6 pod relists
		account(l, kubelet(2), "10.0.0.2", "pods", false, first.Add(time.Duration(j)*time.Second))
	}
	for j := 0; j < 5; j++ { // node 3: 5, below the threshold
		account(l, kubelet(3), "10.0.0.3", "pods", false, first.Add(time.Duration(j)*time.Second))
	}
	for j := 0; j < 6; j++ { // a deleted node's kubelet: a ghost, never stale
		account(l, "system:node:old-worker-7", "10.0.0.3", "pods", false, first.Add(time.Duration(j)*time.Second))
	}
	account(l, "system:node:quiet", "10.0.0.3", "pods", false, later.Add(-11*time.Minute)) // quiet for longer than the window
	account(l, "system:node:recent", "10.0.0.3", "pods", false, first)                     // within it

	want := map[string]string{
		kubelet(1): "stale:" + accounting.ReasonTooLargeRV, kubelet(2): "stale:" + accounting.ReasonRelistLoop, kubelet(3): "",
		"system:node:old-worker-7": "ghost:" + ReasonNoSuchNode, "system:node:quiet": "", "system:node:recent": "ghost:" + ReasonNoSuchNode,
	}
	for _, c := range l.Clients(accounting.ClientFilter{}) {
		got := ""
		switch {
		case c.Cluster == nil:
			got = "no verdict"
		case c.Cluster.Stale:
			got = "stale:" + c.Cluster.StaleReason
		case c.Cluster.Ghost:
			got = "ghost:" + c.Cluster.GhostReason
		}
		if got != want[c.Identity] {
			t.Errorf("%s: verdict %q, want %q", c.Identity, got, want[c.Identity])
		}
	}
	snap := l.Snapshot()
	if snap.StaleTotal != 2 || len(snap.Ghosts) != 2 {
		t.Errorf("snapshot: %d stale, ghosts %+v; want 2 stale, 2 ghosts (the same verdicts)", snap.StaleTotal, snap.Ghosts)
	}
}

// BenchmarkScrape15k is one full scrape of the audit-derived and cluster
// collectors at 5,000 Nodes and 15,000 instances (kubelet, kube-proxy and
// cilium per node), the SPEC §7 size.
func BenchmarkScrape15k(b *testing.B) {
	const n = 5000
	var objs []k8sruntime.Object
	for i := 0; i < n; i++ {
		node, _ := SlimNode(realisticNode(i))
		objs = append(objs, node.(k8sruntime.Object))
	}
	v, _ := syncedView(b, objs...)
	now := time.Now()
	l := judgedLedger(b, v, now, nil)
	for i := 0; i < n; i++ {
		node := realisticNode(i)
		ip := node.Status.Addresses[0].Address
		account(l, "system:node:"+node.Name, ip, "pods", false, now)
		l.Account(from(ip, &audit.Event{AuditID: []byte("p"), Stage: audit.StageResponseComplete, Verb: []byte("list"),
			User: []byte("system:serviceaccount:kube-system:kube-proxy"), Resource: []byte("services"), Code: 200, StageTimestampNanos: now.UnixNano()}))
		l.Account(from(ip, &audit.Event{AuditID: []byte("c"), Stage: audit.StageResponseComplete, Verb: []byte("list"),
			User: []byte("system:serviceaccount:kube-system:cilium"), Resource: []byte("pods"), Code: 200, StageTimestampNanos: now.UnixNano()}))
	}
	if got := l.Snapshot().Instances; got != 3*n {
		b.Fatalf("instances = %d, want %d", got, 3*n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.New(collector.Sources{Ledger: l, Cluster: v}, slog.New(slog.DiscardHandler)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
