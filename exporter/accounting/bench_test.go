package accounting

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

type benchAddrs map[string]string

func (a benchAddrs) NodeForIP(ip []byte) (string, bool) {
	n, ok := a[string(ip)]
	return n, ok
}

// BenchmarkAccount is Account alone — no decoding or dedup, unlike
// exporter's BenchmarkHotPath400 — over 2,500 events of 500 nodes'
// kubelets, kube-proxies and cilium agents (a LIST each, and a plain
// re-watch of pods by the kubelet and the cilium agent), every instance
// known (one op is one event). It isolates the ledger's share of the hot path when the whole
// pipeline's figures are too noisy to compare.
func BenchmarkAccount(b *testing.B) {
	c, _ := classify.New(nil)
	addrs := benchAddrs{}
	var evs []*audit.Event
	now := time.Now()
	for i := 0; i < 500; i++ {
		node, ip := fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.%d.%d", i/250, i%250)
		addrs[ip] = node
		// sel: a spec.nodeName=<node> selector, as the decoder reports it.
		mk := func(user, ua, verb, res, group string, sel bool) *audit.Event {
			e := &audit.Event{AuditID: []byte(fmt.Sprint(len(evs))), Stage: audit.StageResponseComplete, Verb: []byte(verb),
				User: []byte(user), UserAgent: []byte(ua), SourceIP: []byte(ip), Resource: []byte(res), APIGroup: []byte(group),
				Code: 200, StageTimestampNanos: now.UnixNano(), Query: audit.Query{ResourceVersion: []byte("0")}}
			if sel {
				e.Query.FieldSelectorNode = []byte(node)
			}
			e.SourceIPTail[0], e.NumSourceIPTail = e.SourceIP, 1 // sourceIPs [ip]: the connection's
			return e
		}
		watch := func(e *audit.Event) *audit.Event {
			e.Stage, e.Verb, e.Query.ResourceVersion = audit.StageResponseStarted, []byte("watch"), []byte("4711")
			return e
		}
		evs = append(evs,
			watch(mk("system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "list", "pods", "", true)),
			watch(mk("system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.0", "list", "pods", "", false)),
			mk("system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "list", "pods", "", true),
			mk("system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3", "list", "endpointslices", "discovery.k8s.io", false),
			mk("system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.0", "list", "pods", "", false))
	}
	l, err := New(DefaultConfig(), c, addrs)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range evs {
		l.Account(e)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Account(evs[i%len(evs)])
		i++
	}
}
