package accounting

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Concurrent batches account in parallel, on the ledger's shards, while
// scrapes and /debug/clients read it: every counter still adds up exactly,
// and each watch counts once although its two stages arrive on different
// goroutines (run under -race).
func TestConcurrentAccountingIsExact(t *testing.T) {
	l := ledgerWith(t, judgeGhosts{}, nil)
	const (
		workers = 4
		nodes   = 200
		rounds  = 5
	)
	// Each worker sends every node's kubelet pod LIST and cilium (attributed
	// by address) LIST, rounds times; the ResponseStarted of node n's
	// WatchList goes from worker n%workers and its ResponseComplete from the
	// next worker, so they race.
	watch := func(n, round int, stage audit.Stage) *audit.Event {
		e := request{user: fmt.Sprintf("system:node:node-%d", n), ua: kubeUA, resource: "pods", code: 200,
			sourceIPs: []string{fmt.Sprintf("10.0.0.%d", 1+n%250)}}.event()
		e.Verb, e.Stage, e.Query.SendInitialEvents = []byte("watch"), stage, true
		e.AuditID = fmt.Appendf(nil, "watch-%d-%d", n, round)
		e.RequestReceived = fmt.Appendf(nil, "2026-11-23T08:00:%02d.%06dZ", round, n)
		return e
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	reads := sync.WaitGroup{}
	reads.Add(1)
	go func() {
		defer reads.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = l.Snapshot()
			_ = l.Clients(ClientFilter{Limit: 10})
			_ = l.TokenReviewNodes()
		}
	}()
	// One ResponseStarted first, so that watches count at that stage.
	l.Account(watch(999, 0, audit.StageResponseStarted))
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				for n := 0; n < nodes; n++ {
					l.Account(request{user: fmt.Sprintf("system:node:node-%d", n), ua: kubeUA, resource: "pods", code: 200,
						at: time.Duration(r) * time.Second}.event())
					l.Account(request{user: cilium, ua: ciliumUA, resource: "endpointslices", group: "discovery.k8s.io", code: 200,
						sourceIPs: []string{fmt.Sprintf("10.0.0.%d", 1+n%250)}, at: time.Duration(r) * time.Second}.event())
					switch n % workers {
					case w:
						l.Account(watch(n, r, audit.StageResponseStarted))
					case (w + 1) % workers:
						l.Account(watch(n, r, audit.StageResponseComplete))
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	reads.Wait()

	s := l.Snapshot()
	got := map[string]uint64{}
	for _, r := range s.Requests {
		got[r.Client+"/"+r.Verb] += r.Value
	}
	want := map[string]uint64{
		"kubelet/list":      workers * rounds * nodes,
		"kubelet/watch":     rounds*nodes + 1,
		"cilium-agent/list": workers * rounds * nodes,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("requests %s = %d, want %d", k, got[k], v)
		}
	}
	var relists uint64
	for _, r := range s.Relists {
		relists += r.Value
	}
	if want := uint64(2*workers*rounds*nodes + rounds*nodes + 1); relists != want {
		t.Errorf("relists = %d, want %d", relists, want)
	}
	// Instances: 201 kubelets, and cilium on each of the 200 addresses'
	// nodes (10.0.0.1..200 are node-1..200).
	if s.Instances != nodes+1+nodes {
		t.Errorf("instances = %d, want %d", s.Instances, 2*nodes+1)
	}
	// The forecast, aggregated shard by shard on the copies: every instance
	// is live on its one stream.
	var live uint64
	for _, c := range s.Stampede {
		live += c.Value
	}
	if live != uint64(s.Instances) {
		t.Errorf("live instances (herd_stampede_instances) = %d, want %d", live, s.Instances)
	}
	var reqs uint64
	for _, c := range l.Clients(ClientFilter{}) {
		reqs += c.Requests
	}
	if want := uint64(2*workers*rounds*nodes + rounds*nodes + 1); reqs != want {
		t.Errorf("requests over /debug/clients = %d, want %d", reqs, want)
	}
}

// Instances evicted while other goroutines account and read: the table
// never holds more than MaxInstances, and what was evicted is counted.
func TestConcurrentEviction(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxInstances = 100 })
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				l.Account(ev{user: fmt.Sprintf("system:node:w%d-n%d", w, i), verb: "list", resource: "pods", at: time.Duration(i) * time.Millisecond}.event())
				if i%50 == 0 {
					if s := l.Snapshot(); s.Instances > 100 {
						t.Errorf("instances = %d, bound 100", s.Instances)
					}
				}
			}
		}()
	}
	wg.Wait()
	s := l.Snapshot()
	if s.Instances > 100 || s.Instances+int(s.Evicted) != 2000 {
		t.Errorf("instances %d + evicted %d, want ≤ 100 and 2000 in all", s.Instances, s.Evicted)
	}
	if n := l.count.Load(); n != int64(s.Instances) {
		t.Errorf("count %d, instances %d", n, s.Instances)
	}
}

// The limit of /debug/clients bounds the work: the busiest instances come
// first, in the same order with or without a limit.
func TestClientsLimitKeepsTheOrder(t *testing.T) {
	l := newLedger(t, nil)
	for i := 0; i < 300; i++ {
		for j := 0; j < i%17; j++ {
			l.Account(ev{user: fmt.Sprintf("system:node:node-%03d", i), verb: "list", resource: "pods", at: time.Duration(j) * time.Second}.event())
		}
		l.Account(ev{user: fmt.Sprintf("system:node:node-%03d", i), verb: "get", resource: "pods"}.event())
	}
	all := l.Clients(ClientFilter{})
	if len(all) != 300 {
		t.Fatalf("%d clients, want 300", len(all))
	}
	for i := 1; i < len(all); i++ {
		a, b := all[i-1], all[i]
		if a.WindowRelists < b.WindowRelists || a.WindowRelists == b.WindowRelists && a.Identity+a.Node > b.Identity+b.Node {
			t.Fatalf("clients %d and %d out of order: %s (%d), %s (%d)", i-1, i, a.Identity, a.WindowRelists, b.Identity, b.WindowRelists)
		}
	}
	for _, limit := range []int{1, 10, 299} {
		some := l.Clients(ClientFilter{Limit: limit})
		if len(some) != limit {
			t.Fatalf("limit %d: %d clients", limit, len(some))
		}
		for i := range some {
			if some[i].Identity != all[i].Identity || some[i].WindowRelists != all[i].WindowRelists || len(some[i].Resources) != len(all[i].Resources) {
				t.Fatalf("limit %d: client %d is %s (%d), want %s (%d)", limit, i, some[i].Identity, some[i].WindowRelists, all[i].Identity, all[i].WindowRelists)
			}
		}
	}
}

func TestLessConcat(t *testing.T) {
	for _, tc := range [][4]string{{"ab", "c", "a", "bd"}, {"a", "", "a", "b"}, {"", "", "", ""}, {"x", "yz", "xy", "z"}, {"b", "", "a", "zz"}} {
		if got, want := lessConcat(tc[0], tc[1], tc[2], tc[3]), tc[0]+tc[1] < tc[2]+tc[3]; got != want {
			t.Errorf("lessConcat(%q) = %v, want %v", tc, got, want)
		}
	}
}

// Eviction moves instances and streams within their shard's packed
// arrays: after heavy churn, every instance still has its own windows and
// streams, as /debug/clients and the snapshot show them.
func TestEvictionKeepsEachInstancesWindows(t *testing.T) {
	l := newLedger(t, func(c *Config) { c.MaxInstances, c.RelistThreshold = 100, 1 })
	resources := []string{"pods", "services", "configmaps", "secrets"}
	relists := func(i int) int { return i%5 + 1 }
	streams := func(i int) int { return i%4 + 1 }
	for i := 0; i < 1000; i++ {
		user := fmt.Sprintf("system:node:node-%04d", i)
		for r := 0; r < streams(i); r++ {
			for k := 0; k < relists(i); k++ {
				l.Account(ev{user: user, verb: "list", resource: resources[r], at: time.Duration(i) * time.Millisecond}.event())
			}
		}
	}
	clients := l.Clients(ClientFilter{})
	if len(clients) == 0 || len(clients) > 100 {
		t.Fatalf("%d clients, want 1..100", len(clients))
	}
	var total uint64
	for _, c := range clients {
		var i int
		if _, err := fmt.Sscanf(c.Node, "node-%d", &i); err != nil {
			t.Fatal(err)
		}
		if len(c.Resources) != streams(i) || c.WindowRelists != relists(i)*streams(i) || c.Requests != uint64(relists(i)*streams(i)) {
			t.Errorf("%s: %d streams, %d window relists, %d requests; want %d, %d, %d", c.Node, len(c.Resources), c.WindowRelists, c.Requests,
				streams(i), relists(i)*streams(i), relists(i)*streams(i))
		}
		for _, r := range c.Resources {
			if r.WindowRelists != relists(i) || r.Relists != uint64(relists(i)) {
				t.Errorf("%s %s: %d window relists, %d relists; want %d", c.Node, r.Resource, r.WindowRelists, r.Relists, relists(i))
			}
		}
		total += uint64(relists(i) * streams(i))
	}
	s := l.Snapshot()
	var top uint64
	for _, x := range s.TopInstances {
		top += uint64(x.Relists)
	}
	if s.Instances != len(clients) {
		t.Errorf("snapshot: %d instances, /debug/clients %d", s.Instances, len(clients))
	}
	var relisting uint64
	for _, r := range s.RelistingInstances {
		relisting += r.Value
	}
	var streamsKept int
	for _, c := range clients {
		streamsKept += len(c.Resources)
	}
	if relisting != uint64(streamsKept) {
		t.Errorf("relisting instances (threshold 1) = %d, want one per kept stream: %d", relisting, streamsKept)
	}
}

// Packed counter keys come back as they went in, at the bounds of every
// field.
func TestPackedKeys(t *testing.T) {
	for _, role := range []classify.Role{0, classify.RoleKubelet, classify.RoleCNI, 255} {
		for _, client := range []uint16{0, 7, 65535} {
			ck := clientKey{role: role, client: client}
			for _, res := range []uint16{0, 255, 65535} {
				for _, shape := range []Shape{ShapeAll, ShapeUnknown, 255} {
					for _, cons := range []Consistency{Cache, Consistent, 255} {
						k := relistKey{shapeKey{streamKey{ck, res}, shape}, cons}
						if got := unpackRelist(k.pack()); got != k {
							t.Errorf("relist key %+v came back %+v", k, got)
						}
						if got := unpackShape(k.shapeKey.pack()); got != k.shapeKey {
							t.Errorf("shape key %+v came back %+v", k.shapeKey, got)
						}
						if got := unpackStream(k.streamKey.pack()); got != k.streamKey {
							t.Errorf("stream key %+v came back %+v", k.streamKey, got)
						}
					}
				}
			}
			for _, verb := range []uint16{0, 13, 65535} {
				for _, code := range []int32{codeOther, 200, 599} {
					k := requestKey{ck, verb, code}
					if got := unpackRequest(k.pack()); got != k {
						t.Errorf("request key %+v came back %+v", k, got)
					}
				}
			}
		}
	}
}
