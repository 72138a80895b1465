package cluster

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/collector"
)

func account(l *accounting.Ledger, user, ip, resource string, tooLarge bool, at time.Time) {
	code := int32(200)
	if tooLarge {
		code = 504
	}
	l.Account(&audit.Event{AuditID: []byte(at.String() + user), Stage: audit.StageResponseComplete, Verb: []byte("list"),
		User: []byte(user), UserAgent: []byte("kubelet/v1.36.3"), SourceIP: []byte(ip), Resource: []byte(resource),
		Code: code, TooLargeResourceVersion: tooLarge, StageTimestampNanos: at.UnixNano()})
}

// TestCollectorSeriesAreBoundedAndDocumented drives ghosts and stale kubelets
// through the collector: exact series, caps honoured, every name in
// docs/metrics.md, promlint clean.
func TestCollectorSeriesAreBoundedAndDocumented(t *testing.T) {
	client := fake.NewSimpleClientset(realisticNode(1), realisticNode(2), realisticNode(3))
	v := New(client, Options{Grace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	for deadline := time.Now().Add(10 * time.Second); !v.Synced() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	later := time.Now().Add(10 * time.Minute)
	v.now = func() time.Time { return later }

	cls, _ := classify.New(nil)
	l := accounting.New(accounting.Config{Window: 10 * time.Minute}, cls, v)
	c := &Collector{View: v, Ledger: l, MaxGhosts: 1, MaxStale: 1}
	l.SetFlagger(c)
	first := later.Add(-9 * time.Minute) // old enough to be past the grace
	// Two ghosts, the second more recent; three stale kubelets (two too-large, one loop).
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

	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.New(l, slog.New(slog.DiscardHandler), map[string]collector.Collector{"cluster": c}))
	want := `
# HELP herd_ghost_instances Node-side client instances whose node is not a Node, or whose source address belongs to no Node and no control-plane CIDR.
# TYPE herd_ghost_instances gauge
herd_ghost_instances{client="kubelet",role="kubelet"} 2
# HELP herd_stale_kubelets Kubelets of existing Nodes whose pod sync is failing in the window, all of them (herd_stale_kubelet lists at most cluster.maxStaleSeries).
# TYPE herd_stale_kubelets gauge
herd_stale_kubelets 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "herd_ghost_instances", "herd_stale_kubelets"); err != nil {
		t.Error(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range families {
		series[mf.GetName()] = len(mf.GetMetric())
	}
	if series["herd_ghost_instance"] != 1 || series["herd_stale_kubelet"] != 1 {
		t.Errorf("ghost series %d, stale series %d; want 1 each (the caps)", series["herd_ghost_instance"], series["herd_stale_kubelet"])
	}
	var staleNode, ghostIdentity string
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				switch {
				case mf.GetName() == "herd_stale_kubelet" && lp.GetName() == "node":
					staleNode = lp.GetValue()
				case mf.GetName() == "herd_ghost_instance" && lp.GetName() == "identity":
					ghostIdentity = lp.GetValue()
				}
			}
		}
	}
	if staleNode != realisticNode(2).Name {
		t.Errorf("the one stale series shown is %q, want the worst (%s, 4 too-large errors)", staleNode, realisticNode(2).Name)
	}
	if ghostIdentity != "system:node:gone-b" {
		t.Errorf("the one ghost series shown is %q, want the most recent (gone-b)", ghostIdentity)
	}
	// Flagged instances outside the caps get no per-node series either.
	var relistNodes []string
	for _, mf := range families {
		if mf.GetName() == "herd_instance_relists" {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "node" {
						relistNodes = append(relistNodes, lp.GetValue())
					}
				}
			}
		}
	}
	if len(relistNodes) > 20+2 {
		t.Errorf("instance relist series = %d, want at most topK + the capped flagged ones", len(relistNodes))
	}

	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "herd_") && !strings.Contains(string(doc), "`"+mf.GetName()+"`") {
			t.Errorf("%s is not documented in docs/metrics.md", mf.GetName())
		}
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
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
	v := New(fake.NewSimpleClientset(objs...), Options{Grace: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	v.Start(ctx)
	for !v.Synced() {
		time.Sleep(10 * time.Millisecond)
	}
	cls, _ := classify.New(nil)
	l := accounting.New(accounting.Config{}, cls, v)
	c := &Collector{View: v, Ledger: l}
	l.SetFlagger(c)
	now := time.Now()
	for i := 0; i < n; i++ {
		node := realisticNode(i)
		ip := node.Status.Addresses[0].Address
		account(l, "system:node:"+node.Name, ip, "pods", false, now)
		l.Account(&audit.Event{AuditID: []byte("p"), Stage: audit.StageResponseComplete, Verb: []byte("list"),
			User: []byte("system:serviceaccount:kube-system:kube-proxy"), SourceIP: []byte(ip), Resource: []byte("services"), Code: 200, StageTimestampNanos: now.UnixNano()})
		l.Account(&audit.Event{AuditID: []byte("c"), Stage: audit.StageResponseComplete, Verb: []byte("list"),
			User: []byte("system:serviceaccount:kube-system:cilium"), SourceIP: []byte(ip), Resource: []byte("pods"), Code: 200, StageTimestampNanos: now.UnixNano()})
	}
	if got := l.Snapshot().Instances; got != 3*n {
		b.Fatalf("instances = %d, want %d", got, 3*n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector.New(l, slog.New(slog.DiscardHandler), map[string]collector.Collector{"cluster": c}))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
