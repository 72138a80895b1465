package accounting

import (
	"net/netip"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
)

func TestTrustedSourceIP(t *testing.T) {
	plain := ledgerWith(t, nil, nil)
	proxied := ledgerWith(t, nil, func(c *Config) { c.TrustedProxies = []string{"10.99.0.0/16", "fd00:99::/32"} })
	for _, tc := range []struct {
		name               string
		sourceIPs          []string
		plain, withProxies string
	}{
		{"direct connection", []string{"10.0.0.1"}, "10.0.0.1", "10.0.0.1"},
		{"client-chosen X-Forwarded-For", []string{"10.0.0.1", "192.0.2.66"}, "192.0.2.66", "192.0.2.66"},
		{"through a trusted proxy", []string{"10.0.0.1", "10.99.0.5"}, "10.99.0.5", "10.0.0.1"},
		{"forged hop in front of a trusted proxy", []string{"10.0.0.7", "192.0.2.66", "10.99.0.5"}, "10.99.0.5", "192.0.2.66"},
		{"two trusted proxies", []string{"10.0.0.1", "10.99.1.1", "10.99.0.5"}, "10.99.0.5", "10.0.0.1"},
		{"only proxies", []string{"10.99.1.1", "10.99.0.5"}, "10.99.0.5", "10.99.1.1"},
		{"IPv6 proxy", []string{"fd00::1", "fd00:99::5"}, "fd00:99::5", "fd00::1"},
		{"IPv4-mapped proxy address", []string{"10.0.0.1", "::ffff:10.99.0.5"}, "::ffff:10.99.0.5", "10.0.0.1"},
		{"no address", nil, "", ""},
	} {
		e := request{sourceIPs: tc.sourceIPs}.event()
		if got := string(plain.TrustedSourceIP(e)); got != tc.plain {
			t.Errorf("%s: no trusted proxies: %q, want %q", tc.name, got, tc.plain)
		}
		if got := string(proxied.TrustedSourceIP(e)); got != tc.withProxies {
			t.Errorf("%s: with trusted proxies: %q, want %q", tc.name, got, tc.withProxies)
		}
	}
	// An address the decoder knows without knowing whose it is (a GKE
	// callerIp) is shown, never trusted.
	if got := plain.TrustedSourceIP(&audit.Event{SourceIP: []byte("10.0.0.9")}); got != nil {
		t.Errorf("lone SourceIP trusted: %q", got)
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("New with an invalid config: no error")
	}
	bad := DefaultConfig()
	bad.TrustedProxies = []string{"10.0.0.0/8", "10.99.0.5"}
	if err := bad.Validate(); err == nil || err.Error() != `accounting.trustedProxies[1] "10.99.0.5": must be a CIDR such as 10.0.0.0/8` {
		t.Errorf("bad trusted proxy: %v", err)
	}
}

// The node comes from, in order: system:node:NAME, the token's node name,
// the trusted source address, a field selector (SPEC §3.2).
func TestAttributionOrder(t *testing.T) {
	l := ledgerWith(t, nodeAddrs{}, nil)
	token := func(r request, node string) *audit.Event {
		e := r.event()
		e.NodeNameExtra = []byte(node)
		return e
	}
	selector := func(r request, node string) *audit.Event {
		e := r.event()
		e.Query.FieldSelectorNode = []byte(node)
		return e
	}
	const kp = "system:serviceaccount:kube-system:kube-proxy"
	for _, e := range []*audit.Event{
		token(request{user: "system:node:node-1", code: 200, resource: "pods", sourceIPs: []string{"10.0.0.2"}}, "node-3"),
		token(request{user: kp, code: 200, resource: "services", sourceIPs: []string{"10.0.0.2", "192.0.2.1"}}, "node-4"),
		selector(request{user: kp, code: 200, resource: "services", sourceIPs: []string{"10.0.0.9", "10.0.0.5"}}, "node-6"),
		selector(request{user: kp, code: 200, resource: "services", sourceIPs: []string{"10.0.0.9", "192.0.2.1"}}, "node-7"),
		request{user: kp, code: 200, resource: "services", sourceIPs: []string{"10.0.0.9", "192.0.2.1"}}.event(),
	} {
		l.Account(e)
	}
	got := map[string]string{}
	for _, c := range l.Clients(ClientFilter{}) {
		got[c.Node] = c.Attribution
	}
	want := map[string]string{"node-1": "username", "node-4": "token", "node-5": "source_ip", "node-7": "field_selector", "": "unknown"}
	if len(got) != len(want) {
		t.Errorf("instances by node: %v, want %v", got, want)
	}
	for node, attr := range want {
		if got[node] != attr {
			t.Errorf("node %q attributed by %q, want %q (all: %v)", node, got[node], attr, got)
		}
	}
}

// addrTable is a resolver that, like the cluster view's, does not allocate.
type addrTable map[string]string

func (a addrTable) NodeForIP(ip []byte) (string, bool) {
	n, ok := a[string(ip)]
	return n, ok
}

func TestAccountingTrustedProxiesDoesNotAllocate(t *testing.T) {
	l := ledgerWith(t, addrTable{"10.0.0.3": "node-3"}, func(c *Config) { c.TrustedProxies = []string{"10.99.0.0/16"} })
	e := request{user: "system:serviceaccount:kube-system:cilium", ua: "cilium-agent/1.18.0", resource: "pods", code: 200,
		sourceIPs: []string{"10.0.0.3", "10.99.0.5"}}.event()
	l.Account(e)
	if allocs := testing.AllocsPerRun(1000, func() { l.Account(e) }); allocs != 0 {
		t.Errorf("Account allocates %.1f times per known event behind a trusted proxy, want 0", allocs)
	}
	if c := l.Clients(ClientFilter{}); len(c) != 1 || c[0].Node != "node-3" || c[0].TrustedSourceIP != "10.0.0.3" || c[0].SourceIP != "10.0.0.3" {
		t.Errorf("clients %+v: want one on node-3 by its address behind the proxy", c)
	}
	if a, ok := parseAddr([]byte("fd00::1%eth0")); !ok || a.Zone() != "eth0" {
		t.Errorf("parseAddr with a zone = %v %v", a, ok)
	}
}

// Account returns the time it accounted an event at, bounded by the clock
// plus MaxClockSkew; an untimed event is accounted now.
func TestAccountedTime(t *testing.T) {
	l := ledgerWith(t, nil, nil)
	now := t0.Add(time.Minute).UnixNano()
	skew := int64(DefaultConfig().MaxClockSkew)
	for _, tc := range []struct{ at, want int64 }{
		{t0.UnixNano(), t0.UnixNano()},
		{now + skew, now + skew},
		{now + skew + 1, now},
		{now + int64(time.Hour), now},
		{0, now},
		{-5, now},
	} {
		e := request{user: "system:node:node-1", resource: "pods", code: 200}.event()
		e.StageTimestampNanos = tc.at
		if got := l.Account(e); got != tc.want {
			t.Errorf("Account(at %d) = %d, want %d", tc.at, got, tc.want)
		}
	}
}

// judgeGhosts calls every host-network instance on a node named "gone" a
// ghost, and every node but "gone" existing.
type judgeGhosts struct{ nodeAddrs }

func (judgeGhosts) Judge(w *InstanceWindow, _ int64) NodeVerdict {
	v := NodeVerdict{Synced: true, NodeExists: w.Node != "gone"}
	if !v.NodeExists {
		v.GhostReason = "no_such_node"
	}
	return v
}

// Top-K is per stream: a client's storm keeps its K series whatever other
// streams do, flagged instances keep theirs below the K, and at most
// MaxTopKStreams streams (the busiest) have any.
func TestTopKPerStream(t *testing.T) {
	l := ledgerWith(t, judgeGhosts{}, func(c *Config) { c.TopK, c.MaxTopKStreams = 2, 2 })
	list := func(user, ua, resource string, n int, ips ...string) {
		for i := 0; i < n; i++ {
			l.Account(request{user: user, ua: ua, resource: resource, code: 200, sourceIPs: ips, at: time.Duration(i) * time.Second}.event())
		}
	}
	// (services, not pods: kubelets relisting pods this often would be
	// stale, and flagged.)
	list("system:node:node-1", "kubelet/v1", "services", 50)
	list("system:node:node-2", "kubelet/v1", "services", 40)
	list("system:node:node-3", "kubelet/v1", "services", 30) // third in its stream: no series
	list("system:node:gone", "kubelet/v1", "services", 1)    // a ghost: flagged, kept
	for n := 1; n <= 3; n++ {                                // a quieter client's stream keeps its own top 2
		list("system:serviceaccount:kube-system:cilium", "cilium-agent/1", "pods", 5+n, "10.0.0."+string(rune('0'+n)))
	}
	list("system:serviceaccount:default:app", "calico-node/v3", "nodes", 3) // the third stream: over MaxTopKStreams
	got := map[string]int{}
	for _, ti := range l.Snapshot().TopInstances {
		got[ti.Client+"/"+ti.Resource+"/"+ti.Node+"/"+ti.ClassifiedBy] = ti.Relists
	}
	want := map[string]int{
		"kubelet/services/node-1/identity": 50, "kubelet/services/node-2/identity": 40, "kubelet/services/gone/identity": 1,
		"cilium-agent/pods/node-3/identity": 8, "cilium-agent/pods/node-2/identity": 7,
	}
	if len(got) != len(want) {
		t.Errorf("top instances %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("top instance %s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
}

// A client classified by its user agent alone is measured and marked, and
// never judged a ghost: its identity proves nothing about a node.
func TestUserAgentOnlyClientIsMarkedAndNeverAGhost(t *testing.T) {
	l := ledgerWith(t, judgeGhosts{}, func(c *Config) { c.TopK = 5 })
	e := request{user: "system:serviceaccount:default:app", ua: "calico-node/v3.30.0", resource: "pods", code: 200}.event()
	e.Query.FieldSelectorNode = []byte("gone")
	l.Account(e)
	l.Account(request{user: "system:node:gone", ua: "kubelet/v1", resource: "pods", code: 200}.event())
	s := l.Snapshot()
	if len(s.Ghosts) != 1 || s.Ghosts[0].Identity != "system:node:gone" {
		t.Errorf("ghosts %+v: only the kubelet identity of the missing node", s.Ghosts)
	}
	for _, ti := range s.TopInstances {
		if want := map[string]string{"calico-node": "user_agent", "kubelet": "identity"}[ti.Client]; ti.ClassifiedBy != want {
			t.Errorf("top instance %+v: classified_by %q, want %q", ti, ti.ClassifiedBy, want)
		}
	}
	for _, c := range l.Clients(ClientFilter{Client: "calico-node"}) {
		if c.ClassifiedBy != "user_agent" || c.Cluster == nil || c.Cluster.Ghost {
			t.Errorf("client view %+v: marked user_agent, judged, not a ghost", c)
		}
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "fd00::1", "::ffff:10.0.0.1", "fe80::1%eth0", "1.2.3", "", "::", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseAddr([]byte(s))
		want, err := netip.ParseAddr(s)
		if ok != (err == nil) || ok && got != want {
			t.Errorf("parseAddr(%q) = %v %v, netip.ParseAddr = %v %v", s, got, ok, want, err)
		}
	})
}

// Scrapes and /debug/clients read the ledger while ingest writes it: run
// them together under the race detector (go test -race).
func TestSnapshotWhileAccounting(t *testing.T) {
	l := ledgerWith(t, judgeGhosts{}, func(c *Config) { c.TopK = 2 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3000; i++ {
			node := "node-" + string(rune('a'+i%20))
			l.Account(request{user: "system:node:" + node, ua: "kubelet/v1", resource: []string{"pods", "services", "made-up"}[i%3],
				code: []int32{200, 200, 404}[i%3], at: time.Duration(i) * time.Millisecond}.event())
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			if s := l.Snapshot(); len(s.TopInstances) == 0 {
				t.Error("no top instances after accounting")
			}
			return
		default:
		}
		_ = l.Snapshot()
		_ = l.Clients(ClientFilter{Limit: 5})
	}
}
