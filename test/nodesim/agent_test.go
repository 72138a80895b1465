package nodesim_test

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/client-go/rest"

	"github.com/herd-k8s/herd/test/nodesim"
)

func startKubelet(t *testing.T, ctx context.Context, node string, opts nodesim.AgentOptions) *nodesim.Agent {
	t.Helper()
	a, err := nodesim.StartKubelet(ctx, sharedEnv(t).cp, node, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAgentKubeletSteadyState: a kubelet agent relists each resource once
// with a WatchList stream, sees exactly its own pods and Node, and its
// requests carry the kubelet identity.
func TestAgentKubeletSteadyState(t *testing.T) {
	e := sharedEnv(t)
	ctx := ctxFor(t, time.Minute)
	audit := since(e.sink)
	a := startKubelet(t, ctx, "node-3", nodesim.AgentOptions{})

	pods := a.Keys("pods")
	if len(pods) != podsPerNode {
		t.Fatalf("node-3 kubelet sees pods %v, want its %d", pods, podsPerNode)
	}
	for _, k := range pods {
		if obj, _ := a.Get("pods", k); obj == nil || nodeNameOf(obj.Object) != "node-3" {
			t.Errorf("node-3 kubelet stores pod %s of another node", k)
		}
	}
	if nodes := a.Keys("nodes"); len(nodes) != 1 || nodes[0] != "node-3" {
		t.Errorf("node-3 kubelet sees nodes %v, want [node-3]", nodes)
	}
	for _, r := range a.Resources() {
		st := a.Stats(r)
		if st.WatchLists != 1 || st.Lists != 0 || st.Syncs != 1 {
			t.Errorf("%s: stats %+v, want one WatchList relist and one sync", r, st)
		}
	}
	// The apiserver audited the pods WatchList as a kubelet watch with
	// sendInitialEvents and the node-3 field selector.
	user := a.Client.User
	found := waitFor(t, 10*time.Second, func() bool {
		return audit.count(func(ev auditv1.Event) bool {
			return ev.User.Username == user && ev.Verb == "watch" && ev.Stage == auditv1.StageResponseStarted &&
				ev.UserAgent == nodesim.KubeletUserAgent && hasParams(ev.RequestURI, "sendInitialEvents", "true", "fieldSelector", "spec.nodeName=node-3")
		}) == 1
	})
	if !found {
		t.Error("no ResponseStarted audit event for node-3's pods WatchList")
	}
}

// TestAgentRelistKnobs: RelistNow forces exactly one relist per call, with
// WatchList (default) or LIST (DisableWatchList); RelistEvery keeps relisting
// until Stop.
func TestAgentRelistKnobs(t *testing.T) {
	ctx := ctxFor(t, time.Minute)

	watchList := startKubelet(t, ctx, "node-1", nodesim.AgentOptions{})
	for i := 0; i < 2; i++ {
		if err := watchList.RelistNow(ctx, "pods"); err != nil {
			t.Fatal(err)
		}
	}
	if st := watchList.Stats("pods"); st.WatchLists != 3 || st.Lists != 0 || st.Syncs != 3 || st.Restarts != 2 {
		t.Errorf("WatchList kubelet after 2 RelistNow: %+v, want 3 WatchLists, 3 syncs, 2 restarts", st)
	}
	if got := len(watchList.Keys("pods")); got != podsPerNode {
		t.Errorf("after relists the store holds %d pods, want %d", got, podsPerNode)
	}

	list := startKubelet(t, ctx, "node-2", nodesim.AgentOptions{DisableWatchList: true})
	if err := list.RelistNow(ctx, "runtimeclasses.node.k8s.io"); err != nil {
		t.Fatal(err)
	}
	if st := list.Stats("runtimeclasses.node.k8s.io"); st.Lists != 2 || st.WatchLists != 0 || st.Syncs != 2 || st.Watches < 1 {
		t.Errorf("LIST+WATCH kubelet after RelistNow: %+v, want 2 LISTs, 2 syncs, no WatchList", st)
	}

	if err := list.RelistEvery("csidrivers.storage.k8s.io", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !waitFor(t, 15*time.Second, func() bool { return list.Stats("csidrivers.storage.k8s.io").Syncs >= 4 }) {
		t.Fatalf("RelistEvery: stats %+v, want at least 4 syncs", list.Stats("csidrivers.storage.k8s.io"))
	}
	list.Stop()
	after := list.Stats("csidrivers.storage.k8s.io")
	time.Sleep(500 * time.Millisecond)
	if st := list.Stats("csidrivers.storage.k8s.io"); st != after {
		t.Errorf("relist loop still running after Stop: %+v then %+v", after, st)
	}
	if err := list.RelistNow(ctx, "pods"); err == nil {
		t.Error("RelistNow after Stop succeeded")
	}
}

// TestAgentRestartRecovery is the acceptance test for apiserver restarts:
// three kubelets in steady state, kube-apiserver restarted on the same etcd,
// then a new pod for node-1 must reach node-1's kubelet — its reflectors
// reconnected on their own — within 30 s, and not the other kubelets.
func TestAgentRestartRecovery(t *testing.T) {
	e := sharedEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	agents := map[string]*nodesim.Agent{}
	for _, n := range liveNodes {
		agents[n] = startKubelet(t, ctx, n, nodesim.AgentOptions{})
	}
	audit := since(e.sink)
	start := time.Now()
	if err := e.cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("apiserver restarted in %v", time.Since(start).Round(time.Millisecond))

	restarted := time.Now()
	name := fmt.Sprintf("after-restart-%d", time.Now().UnixNano())
	if err := createPod(ctx, e.admin, name, "node-1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePod(e, name) })
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := agents["node-1"].WaitForObject(wctx, "pods", "default/"+name); err != nil {
		t.Fatalf("after the restart: %v (stats %+v)", err, agents["node-1"].Stats("pods"))
	}
	t.Logf("node-1's kubelet saw the new pod %v after the apiserver was ready; pods stats %+v",
		time.Since(restarted).Round(time.Millisecond), agents["node-1"].Stats("pods"))
	for _, n := range []string{"node-2", "node-3"} {
		if _, ok := agents[n].Get("pods", "default/"+name); ok {
			t.Errorf("%s's kubelet stores node-1's new pod", n)
		}
	}
	for _, r := range agents["node-1"].Resources() {
		t.Logf("node-1 %s: %+v", r, agents["node-1"].Stats(r))
	}
	// What the reconnection looked like to the audit log (for the record:
	// which reflectors resumed with a plain watch, which relisted).
	audit.count(func(ev auditv1.Event) bool {
		if ev.User.Username == agents["node-1"].Client.User && ev.Stage != auditv1.StageResponseComplete {
			t.Logf("after restart: %s %s %s -> %d", ev.Stage, ev.Verb, ev.RequestURI, ev.ResponseStatus.Code)
		}
		return false
	})
	// Every kubelet's every reflector is back: one more object reaches node-2.
	other := name + "-b"
	if err := createPod(ctx, e.admin, other, "node-2"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePod(e, other) })
	if err := agents["node-2"].WaitForObject(wctx, "pods", "default/"+other); err != nil {
		t.Fatal(err)
	}
}

// TestNoLeaks: clients, requests and agents leave no goroutines behind once
// stopped and closed.
func TestNoLeaks(t *testing.T) {
	e := sharedEnv(t)
	ctx := ctxFor(t, time.Minute)
	before, _ := agentGoroutines()

	a, err := nodesim.StartKubeProxy(ctx, e.cp, nodesim.AgentOptions{Options: nodesim.Options{SourceIP: "10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.RelistEvery("services", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c, err := nodesim.NewCiliumAgent(e.cp, nodesim.Options{SourceIP: "10.0.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WatchList(ctx, nodesim.Pods, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Watch(ctx, nodesim.Namespaces, "", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	tally, err := nodesim.Repeat(ctx, 20*time.Millisecond, 5, func(ctx context.Context) (nodesim.Result, error) {
		return c.ListCache(ctx, nodesim.Nodes)
	})
	if err != nil || tally.Requests != 5 || tally.Codes[200] != 5 {
		t.Fatalf("Repeat: %+v, %v; want 5 requests answered 200", tally, err)
	}
	if during, _ := agentGoroutines(); during <= before {
		t.Logf("goroutines: %d before, %d while running", before, during)
	}
	a.Stop()
	c.Close()

	var (
		now    int
		stacks string
	)
	ok := waitFor(t, 10*time.Second, func() bool {
		now, stacks = agentGoroutines()
		return now <= before
	})
	if !ok {
		t.Fatalf("goroutines: %d before, %d after Stop and Close (HTTP connection pools aside):\n%s", before, now, stacks)
	}
}

// pooledConn marks the goroutines of a kept-alive HTTP connection: client-go
// caches transports by TLS config and shares them between clients, so an
// idle connection (and its read and write loops) outlives the agent that
// opened it, and one may close or open between two counts whatever the
// agents do (CI saw 12 before, 13 after: a new HTTP/2 connection's readLoop).
// They belong to the transports, not to the agents.
var pooledConn = []string{
	"net/http.(*persistConn).readLoop",
	"net/http.(*persistConn).writeLoop",
	"golang.org/x/net/http2.(*ClientConn).readLoop",
	"net/http.(*http2ClientConn).readLoop",
	"net/http.(*conn).serve",
}

// agentGoroutines counts the goroutines that are not an HTTP connection's
// (pooledConn) and returns their stacks.
func agentGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var kept []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !slices.ContainsFunc(pooledConn, func(f string) bool { return strings.Contains(g, f) }) {
			kept = append(kept, g)
		}
	}
	return len(kept), strings.Join(kept, "\n\n")
}

// TestRepeatStopsWithContext: an unbounded Repeat ends, without error, when
// its context does.
func TestRepeatStopsWithContext(t *testing.T) {
	e := sharedEnv(t)
	c, err := nodesim.NewKubelet(e.cp, "node-2", nodesim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	tally, err := nodesim.Repeat(ctx, 100*time.Millisecond, 0, func(ctx context.Context) (nodesim.Result, error) {
		return c.ListCache(ctx, nodesim.Pods.OnNode("node-2"))
	})
	if err != nil || tally.Requests < 3 || tally.Requests > 7 || tally.Codes[200] != tally.Requests {
		t.Fatalf("Repeat for 500ms every 100ms: %+v, %v", tally, err)
	}
}

// staticSource is a ConfigSource for tests that need no apiserver.
type staticSource struct{}

func (staticSource) Config(string) *rest.Config { return &rest.Config{Host: "https://127.0.0.1:1"} }
func (staticSource) User(id string) string      { return "user-" + id }

func TestNewClientValidates(t *testing.T) {
	if _, err := nodesim.NewKubeProxy(staticSource{}, nodesim.Options{SourceIP: "node-1"}); err == nil {
		t.Error("a source IP that is not an IP was accepted")
	}
	c, err := nodesim.NewCalicoNode(staticSource{}, nodesim.Options{SourceIP: "10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.UserAgent != nodesim.CalicoNodeUserAgent || c.User != "user-calico-node" || c.SourceIP != "10.0.0.9" || c.Agent != nodesim.AgentCalicoNode {
		t.Errorf("calico-node client: %+v", c)
	}
	k, err := nodesim.NewKubelet(staticSource{}, "node-9", nodesim.Options{UserAgent: "kubelet/v1.20.0 (linux/amd64) kubernetes/old"})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.Node != "node-9" || k.Identity != "kubelet:node-9" || k.UserAgent != "kubelet/v1.20.0 (linux/amd64) kubernetes/old" {
		t.Errorf("kubelet client: %+v", k)
	}
	if got := nodesim.RuntimeClasses.Path(); got != "/apis/node.k8s.io/v1/runtimeclasses" {
		t.Errorf("RuntimeClasses.Path() = %q", got)
	}
	if got := nodesim.Pods.InNamespace("kube-system").Path(); got != "/api/v1/namespaces/kube-system/pods" {
		t.Errorf("namespaced pods path = %q", got)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// hasParams reports whether uri's query has each key=value pair.
func hasParams(uri string, kv ...string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return false
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		if q.Get(kv[i]) != kv[i+1] {
			return false
		}
	}
	return true
}

func nodeNameOf(obj map[string]any) string {
	spec, _ := obj["spec"].(map[string]any)
	name, _ := spec["nodeName"].(string)
	return name
}
