package accounting

import (
	"fmt"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// The reproductions of issue 16 ("Trust only what the apiserver vouches
// for") at the ledger level, with events as the apiserver audits them.
// Each failed before the ledger applied SPEC §3.1 "What herd trusts".

// nodeAddrs resolves 10.0.0.N to node-N, as the cluster view does.
type nodeAddrs struct{}

func (nodeAddrs) NodeForIP(ip []byte) (string, bool) {
	var n int
	if _, err := fmt.Sscanf(string(ip), "10.0.0.%d", &n); err != nil || n < 1 || n > 250 {
		return "", false
	}
	return fmt.Sprintf("node-%d", n), true
}

// request is one audited LIST at ResponseComplete.
type request struct {
	user, ua, resource, group string
	code                      int32
	sourceIPs                 []string // as the apiserver records them: X-Forwarded-For first, the peer last
	unauthenticated           bool
	at                        time.Duration // after t0
	tooLarge                  bool
}

func (r request) event() *audit.Event {
	e := &audit.Event{AuditID: []byte(fmt.Sprint(r)), Stage: audit.StageResponseComplete, Verb: []byte("list"),
		User: []byte(r.user), UserAgent: []byte(r.ua), Resource: []byte(r.resource), APIGroup: []byte(r.group),
		Code: r.code, Unauthenticated: r.unauthenticated, TooLargeResourceVersion: r.tooLarge,
		StageTimestampNanos: t0.Add(r.at).UnixNano(), Query: audit.Query{ResourceVersion: []byte("0")}}
	if len(r.sourceIPs) > 0 {
		e.SourceIP = []byte(r.sourceIPs[0])
		tail := r.sourceIPs[max(0, len(r.sourceIPs)-audit.MaxSourceIPTail):]
		for i, ip := range tail {
			e.SourceIPTail[i] = []byte(ip)
		}
		e.NumSourceIPTail = len(tail)
	}
	return e
}

func ledgerWith(t *testing.T, nodes NodeResolver, mod func(*Config)) *Ledger {
	t.Helper()
	c, err := classify.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg, c, nodes)
	if err != nil {
		t.Fatal(err)
	}
	l.now = func() time.Time { return t0.Add(time.Minute) }
	return l
}

const calicoSA = "system:serviceaccount:calico-system:calico-node"

// Point 1: ~4,800 anonymous LISTs, answered 403, with user agent
// calico-node and X-Forwarded-For set to ten real Node addresses, made herd
// count a calico-node relist storm on node-1..10, and the responder isolate
// the real calico-node service account, whose only LIST was ordinary.
func TestIssue16AnonymousFloodIsNoCalicoStorm(t *testing.T) {
	l := ledgerWith(t, nodeAddrs{}, nil)
	const attacker = "192.0.2.66"
	for i := 0; i < 4800; i++ {
		l.Account(request{user: "system:anonymous", ua: "calico-node/v3.30.0 (linux/amd64)", resource: "pods", code: 403,
			unauthenticated: true, sourceIPs: []string{fmt.Sprintf("10.0.0.%d", 1+i%10), attacker},
			at: time.Duration(i) * 10 * time.Millisecond}.event())
	}
	// The real agent on node-1, one ordinary LIST.
	l.Account(request{user: calicoSA, ua: "calico-node/v3.30.0 (linux/amd64)", resource: "pods", code: 200, sourceIPs: []string{"10.0.0.1"}}.event())

	s := l.Snapshot()
	for _, r := range s.Relists {
		if r.Client == "calico-node" && r.Value != 1 {
			t.Errorf("calico-node relists %+v: want only the real agent's one", r)
		}
		if r.Client != "calico-node" {
			t.Errorf("relists %+v: a refused request is not a relist", r)
		}
	}
	for _, r := range s.RelistingInstances {
		if r.Value != 0 {
			t.Errorf("relisting instances %+v: want none", r)
		}
	}
	for _, ti := range s.TopInstances {
		if ti.Client == "calico-node" && (ti.Identity != calicoSA || ti.Node != "node-1" || ti.Relists != 1) {
			t.Errorf("top instance %+v: only the real agent on node-1, with its one relist, may be evidence", ti)
		}
	}
	var refused uint64
	for _, r := range s.Requests {
		switch {
		case r.Client == "calico-node" && (r.Code != 200 || r.Value != 1):
			t.Errorf("calico-node requests %+v: want the real agent's one", r)
		case r.Role == "other" && r.Client == "unauthenticated" && r.Code == 403:
			refused += r.Value
		}
	}
	if refused != 4800 {
		t.Errorf("refused anonymous requests counted %d, want 4800 under role other, client unauthenticated", refused)
	}
	for _, c := range l.Clients(ClientFilter{}) {
		if c.Client == "calico-node" && c.Node != "node-1" {
			t.Errorf("calico-node instance on %s (attribution %s): the anonymous requests claimed it with X-Forwarded-For", c.Node, c.Attribution)
		}
	}
}

// Point 4: one kubelet identity's 1,000 cheap refused LISTs of made-up
// resources evicted a real cilium storm's identities from
// herd_instance_relists, and isolate then found no identity to act on.
func TestIssue16RefusedFloodKeepsTheStormInTopK(t *testing.T) {
	l := ledgerWith(t, nodeAddrs{}, nil)
	const cilium = "system:serviceaccount:kube-system:cilium"
	for n := 1; n <= 30; n++ { // the storm: 30 agents, 3 relists each, every one on its node
		for i := 0; i < 3; i++ {
			l.Account(request{user: cilium, ua: "cilium-agent/1.18.0", resource: "pods", code: 200,
				sourceIPs: []string{fmt.Sprintf("10.0.0.%d", n)}, at: time.Duration(i) * time.Second}.event())
		}
	}
	for i := 0; i < 1000; i++ { // the noise: 1,000 refused LISTs of 20 made-up resources in 0.7 s
		l.Account(request{user: "system:node:node-200", ua: "kubelet/v1.36.3", resource: fmt.Sprintf("made-up-%d", i%20), code: 403,
			sourceIPs: []string{"10.0.0.200"}, at: time.Duration(i) * 700 * time.Microsecond}.event())
	}
	s := l.Snapshot()
	storming := 0
	for _, ti := range s.TopInstances {
		switch {
		case ti.Identity == cilium && ti.Resource == "pods" && ti.Relists >= 3:
			storming++
		case ti.Identity == "system:node:node-200":
			t.Errorf("top instance %+v: refused requests are not relists", ti)
		}
	}
	if want := DefaultConfig().TopK; storming != want {
		t.Errorf("%d storming cilium instances in herd_instance_relists, want %d (the stream's top K)", storming, want)
	}
}

// Point 5: 300 LISTs of made-up resource names filled the resource table
// for good: every resource seen afterwards was "other", which isolate
// refuses.
func TestIssue16MadeUpResourcesTakeNoSlot(t *testing.T) {
	l := ledgerWith(t, nil, nil)
	for i := 0; i < 300; i++ {
		l.Account(request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: fmt.Sprintf("made-up-%d", i), code: 404}.event())
		l.Account(request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: fmt.Sprintf("forbidden-%d", i), code: 403}.event())
	}
	l.Account(request{user: calicoSA, ua: "calico-node/v3.30.0", resource: "leases", group: "coordination.k8s.io", code: 200}.event())
	l.Account(request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: "runtimeclasses", group: "node.k8s.io", code: 504, tooLarge: true}.event())
	s := l.Snapshot()
	names := map[string]uint64{}
	for _, r := range s.Relists {
		names[r.Resource] += r.Value
	}
	if names["leases.coordination.k8s.io"] != 1 || names["runtimeclasses.node.k8s.io"] != 1 {
		t.Errorf("relists by resource %v: a real resource answered after the flood keeps its name", names)
	}
	if len(names) != 3 || names["other"] != 300 {
		t.Errorf("relists by resource %v: want the 300 made-up 404s under \"other\", and no made-up name", names)
	}
}

// Point 6: one event stamped an hour ahead emptied an instance's windowed
// counts and kept new ones from counting.
func TestIssue16FutureEventCountsNow(t *testing.T) {
	l := ledgerWith(t, nil, nil)
	kubelet := request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: "pods", code: 200}
	for i := 0; i < 5; i++ {
		kubelet.at = time.Duration(i) * time.Second
		l.Account(kubelet.event())
	}
	kubelet.at = time.Hour
	l.Account(kubelet.event())
	for i := 0; i < 2; i++ {
		kubelet.at = 10*time.Second + time.Duration(i)*time.Second
		l.Account(kubelet.event())
	}
	s := l.Snapshot()
	if len(s.TopInstances) != 1 || s.TopInstances[0].Relists != 8 {
		t.Errorf("top instances %+v: want node-1 with 8 relists in the window (the future one counted now)", s.TopInstances)
	}
	if len(s.RelistingInstances) != 1 || s.RelistingInstances[0].Value != 1 {
		t.Errorf("relisting instances %+v: want 1", s.RelistingInstances)
	}
	c := l.Clients(ClientFilter{})
	if len(c) != 1 || c[0].LastSeen.After(t0.Add(2*time.Minute)) {
		t.Errorf("last seen %v: a future timestamp must not move an instance ahead of the clock", c[0].LastSeen)
	}
}

// Point 7: 200,000 distinct response codes gave 201,831 series. Codes
// outside the HTTP status codes, and verbs outside the apiserver's, are
// "other"; the real ones keep their names afterwards.
func TestIssue16CodesAndVerbsAreBounded(t *testing.T) {
	l := ledgerWith(t, nil, nil)
	for i := 0; i < 2000; i++ {
		e := request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: "pods", code: int32(1000 + i)}.event()
		l.Account(e)
		e = request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: "pods", code: 200}.event()
		e.Verb = []byte(fmt.Sprintf("verb%d", i))
		l.Account(e)
	}
	l.Account(request{user: "system:node:node-1", ua: "kubelet/v1.36.3", resource: "pods", code: 429}.event())
	s := l.Snapshot()
	if len(s.Requests) > 3 {
		t.Errorf("%d request series; want at most 3 (list/other code, other verb/200, list/429)", len(s.Requests))
	}
	found := false
	for _, r := range s.Requests {
		found = found || r.Verb == "list" && r.Code == 429 && r.Value == 1
	}
	if !found {
		t.Errorf("requests %+v: list answered 429 keeps its verb and code", s.Requests)
	}
}
