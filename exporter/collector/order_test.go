package collector

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// nodesNamed is a cluster view in which node-1..node-3 exist with fresh
// Leases and every other node name is a ghost's.
type nodesNamed struct{}

func (nodesNamed) NodeForIP([]byte) (string, bool) { return "", false }
func (nodesNamed) Judge(w *accounting.InstanceWindow, _ int64) accounting.NodeVerdict {
	exists := w.Node == "node-1" || w.Node == "node-2" || w.Node == "node-3"
	v := accounting.NodeVerdict{Synced: true, NodeExists: exists, HasLease: exists, LeaseAge: 5 * time.Second}
	if !exists && classify.HostAgent(w.Role) {
		v.GhostReason = "no_such_node"
	}
	return v
}

// TestCollectorOrderDoesNotMatter runs the collectors in many orders over
// one ledger and gets the same exposition each time. The case that used to
// depend on order is here: a ghost below its stream's top K (1) keeps its
// per-node relist series because the verdict is made in the snapshot, not
// by a collector that had to run first.
func TestCollectorOrderDoesNotMatter(t *testing.T) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	cls, _ := classify.New(nil)
	cfg := accounting.DefaultConfig()
	cfg.TopK = 1
	l, err := accounting.New(cfg, cls, nodesNamed{})
	if err != nil {
		t.Fatal(err)
	}
	l.SetClock(func() time.Time { return at.Add(time.Minute) })
	list := func(user, resource string, code int32, tooLarge bool, n int) {
		for i := 0; i < n; i++ {
			l.Account(&audit.Event{AuditID: []byte("x"), Stage: audit.StageResponseComplete, Verb: []byte("list"), User: []byte(user),
				Resource: []byte(resource), Code: code, TooLargeResourceVersion: tooLarge, StageTimestampNanos: at.Add(time.Duration(i) * time.Second).UnixNano()})
		}
	}
	list("system:node:node-1", "pods", 200, false, 9)          // the top instance
	list("system:node:node-2", "runtimeclasses", 504, true, 3) // stale, below the top K
	list("system:node:gone", "pods", 200, false, 1)            // a ghost, below the top K

	h := New(Sources{Ledger: l, Cluster: staticCluster{nodes: 3, synced: true}, APIServices: staticAPIServices(nil),
		MetricsServer: staticMetricsServer{}, AuditFiles: map[string]FileSource{"/audit.log": staticFile{}}}, slog.New(slog.DiscardHandler))
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	skip := func(name string) bool { return name == "herd_scrape_collector_duration_seconds" }
	want := gatherText(t, reg, skip)
	for _, node := range []string{"node-1", "node-2", "gone"} {
		if !strings.Contains(want, `herd_instance_relists{classified_by="identity",client="kubelet",identity="system:node:`+node+`"`) {
			t.Errorf("no herd_instance_relists series for %s (top, stale, ghost):\n%s", node, want)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	orders := map[string]bool{}
	for i := 0; i < 50; i++ {
		rng.Shuffle(len(h.names), func(a, b int) { h.names[a], h.names[b] = h.names[b], h.names[a] })
		orders[strings.Join(h.names, ",")] = true
		if got := gatherText(t, reg, skip); got != want {
			t.Fatalf("order %v gives\n%s\nwant (name order)\n%s", h.names, got, want)
		}
	}
	if len(orders) < 20 || !slices.Contains(h.names, "cluster") {
		t.Fatalf("only %d orders of %v tried", len(orders), h.names)
	}
}
