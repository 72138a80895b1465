package accounting

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// readBenchLedger is a ledger holding 5,000 nodes' kubelet, kube-proxy and
// cilium-agent (15,000 instances, each with a pod or endpointslice stream
// relisted in the window), and one event per instance to account again.
func readBenchLedger(b *testing.B) (*Ledger, []*audit.Event) {
	c, _ := classify.New(nil)
	addrs := benchAddrs{}
	var evs []*audit.Event
	now := time.Now()
	for i := 0; i < 5000; i++ {
		node, ip := fmt.Sprintf("node-%d", i), fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)
		addrs[ip] = node
		mk := func(user, ua, res, group string, sel bool) *audit.Event {
			e := &audit.Event{AuditID: []byte(fmt.Sprint(len(evs))), Stage: audit.StageResponseComplete, Verb: []byte("list"),
				User: []byte(user), UserAgent: []byte(ua), SourceIP: []byte(ip), Resource: []byte(res), APIGroup: []byte(group),
				Code: 200, StageTimestampNanos: now.UnixNano(), Query: audit.Query{ResourceVersion: []byte("0")}}
			if sel {
				e.Query.FieldSelectorNode = []byte(node)
			}
			e.SourceIPTail[0], e.NumSourceIPTail = e.SourceIP, 1
			return e
		}
		evs = append(evs,
			mk("system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "pods", "", true),
			mk("system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3", "endpointslices", "discovery.k8s.io", false),
			mk("system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.0", "pods", "", false))
	}
	l, err := New(DefaultConfig(), c, addrs)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range evs {
		l.Account(e)
	}
	return l, evs
}

// BenchmarkClients15k is one /debug/clients page at 15,000 instances: the
// limit bounds the work (issue 16 point 3), not only the output.
func BenchmarkClients15k(b *testing.B) {
	l, _ := readBenchLedger(b)
	for _, limit := range []int{10, 1000, 0} {
		b.Run(fmt.Sprintf("limit=%d", limit), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if n := len(l.Clients(ClientFilter{Limit: limit})); n == 0 {
					b.Fatal("no clients")
				}
			}
		})
	}
}

// BenchmarkSnapshot15k is one ledger snapshot (no cluster view) at 15,000
// instances.
func BenchmarkSnapshot15k(b *testing.B) {
	l, _ := readBenchLedger(b)
	b.ReportAllocs()
	for b.Loop() {
		if s := l.Snapshot(); s.Instances != 15000 {
			b.Fatalf("%d instances", s.Instances)
		}
	}
}

// BenchmarkAccountWhileReading accounts events of known instances on one
// goroutine while another loops on Snapshot and Clients (default limit), as
// two clients looping on /metrics and /debug/clients make herd do. It
// reports how long one Account took at worst and at the 99.9th percentile:
// how long reads hold up ingest.
func BenchmarkAccountWhileReading(b *testing.B) {
	l, evs := readBenchLedger(b)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = l.Snapshot()
			_ = l.Clients(ClientFilter{Limit: 1000})
		}
	}()
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		t0 := time.Now()
		l.Account(evs[i%len(evs)])
		lat = append(lat, time.Since(t0))
		i++
	}
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64(lat[len(lat)*999/1000].Microseconds()), "p99.9-µs")
}
