package nodesim_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/test/controlplane"
	"github.com/herd-k8s/herd/test/nodesim"
)

// TestRawRequestsAudit sends one request of every kind the helpers offer and
// checks the audit event(s) the real apiserver produced for it: verb, URI
// parameters, user, user agent, source IP (X-Forwarded-For honoured), status
// code, resource and stages.
func TestRawRequestsAudit(t *testing.T) {
	e := sharedEnv(t)
	ctx := ctxFor(t, 2*time.Minute)
	cp := e.cp
	audit := since(e.sink)

	kubelet1 := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewKubelet(cp, "node-1", nodesim.Options{}) })
	kubelet2 := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(cp, "node-2", nodesim.Options{SourceIP: "10.0.0.2"})
	})
	ghost := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubelet(cp, ghostNode, nodesim.Options{SourceIP: "10.99.0.7"})
	})
	proxy := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewKubeProxy(cp, nodesim.Options{SourceIP: "10.0.0.1"})
	})
	calico := nodesim.ForTest(t, func() (*nodesim.Client, error) {
		return nodesim.NewCalicoNode(cp, nodesim.Options{SourceIP: "10.0.0.3"})
	})
	cilium := nodesim.ForTest(t, func() (*nodesim.Client, error) { return nodesim.NewCiliumAgent(cp, nodesim.Options{}) })

	if kubelet1.User != "system:node:node-1" || proxy.User != "system:serviceaccount:kube-system:kube-proxy" {
		t.Fatalf("users: kubelet %q, kube-proxy %q", kubelet1.User, proxy.User)
	}

	// Other tests add pods; count what the admin sees now.
	onNode1, onNode2, total := podCount(t, e, "node-1"), podCount(t, e, "node-2"), podCount(t, e, "")
	own1 := nodesim.Pods.OnNode("node-1")
	first, err := kubelet1.ListCache(ctx, own1)
	if err != nil {
		t.Fatal(err)
	}
	if first.Code != 200 || first.Items != onNode1 || first.ResourceVersion == "" {
		t.Fatalf("kubelet cache list of own pods: %v, items %d, rv %q; want 200 with %d items", first, first.Items, first.ResourceVersion, onNode1)
	}

	type call func(context.Context) (nodesim.Result, error)
	cases := []struct {
		name     string
		c        *nodesim.Client
		do       call
		code     int
		verb     string
		resource nodesim.Resource
		params   map[string]string // query parameters the URI must carry ("" = absent)
		items    int               // -1: do not check
		watch    bool              // expects ResponseStarted as well
		message  string            // substring of the Status message
		slow     time.Duration     // minimum duration
	}{
		{
			name: "kubelet cache list", c: kubelet1, code: 200, verb: "list", resource: nodesim.Pods, items: onNode1,
			do:     func(ctx context.Context) (nodesim.Result, error) { return kubelet1.ListCache(ctx, own1) },
			params: map[string]string{"resourceVersion": "0", "fieldSelector": "spec.nodeName=node-1", "resourceVersionMatch": "", "limit": ""},
		},
		{
			name: "kubelet consistent list", c: kubelet1, code: 200, verb: "list", resource: nodesim.Pods, items: onNode1,
			do:     func(ctx context.Context) (nodesim.Result, error) { return kubelet1.ListConsistent(ctx, own1) },
			params: map[string]string{"resourceVersion": "", "fieldSelector": "spec.nodeName=node-1"},
		},
		{
			name: "kubelet exact list", c: kubelet1, code: 200, verb: "list", resource: nodesim.Pods, items: onNode1,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.ListExact(ctx, own1, first.ResourceVersion)
			},
			params: map[string]string{"resourceVersion": first.ResourceVersion, "resourceVersionMatch": "Exact"},
		},
		{
			name: "kubelet too-large resourceVersion (incident 000)", c: kubelet1, code: 504, verb: "list", resource: nodesim.RuntimeClasses, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.ListTooLargeRV(ctx, nodesim.RuntimeClasses, "")
			},
			params:  map[string]string{"resourceVersion": nodesim.TooLargeResourceVersion},
			message: "Too large resource version", slow: 2 * time.Second,
		},
		{
			name: "kubelet lists another node's pods", c: kubelet1, code: 403, verb: "list", resource: nodesim.Pods, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.ListCache(ctx, nodesim.Pods.OnNode("node-2"))
			},
			params: map[string]string{"fieldSelector": "spec.nodeName=node-2"},
		},
		{
			name: "kubelet lists all pods", c: kubelet1, code: 403, verb: "list", resource: nodesim.Pods, items: -1,
			do:     func(ctx context.Context) (nodesim.Result, error) { return kubelet1.ListCache(ctx, nodesim.Pods) },
			params: map[string]string{"fieldSelector": ""},
		},
		{
			// A refused watch is still a long-running request: the apiserver
			// audits ResponseStarted (with the 403) as well as ResponseComplete.
			name: "kubelet watches another node's pods", c: kubelet1, code: 403, verb: "watch", resource: nodesim.Pods, items: -1, watch: true,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.Watch(ctx, nodesim.Pods.OnNode("node-3"), first.ResourceVersion, 0)
			},
			params: map[string]string{"watch": "true"},
		},
		{
			name: "kubelet WatchList relist, consistent", c: kubelet2, code: 200, verb: "watch", resource: nodesim.Pods, items: onNode2, watch: true,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet2.WatchList(ctx, nodesim.Pods.OnNode("node-2"), "")
			},
			params: map[string]string{
				"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
				"allowWatchBookmarks": "true", "resourceVersion": "", "fieldSelector": "spec.nodeName=node-2",
			},
		},
		{
			name: "kubelet WatchList relist from a resourceVersion", c: kubelet2, code: 200, verb: "watch", resource: nodesim.Pods, items: onNode2, watch: true,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet2.WatchList(ctx, nodesim.Pods.OnNode("node-2"), first.ResourceVersion)
			},
			params: map[string]string{"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "resourceVersion": first.ResourceVersion},
		},
		{
			name: "kubelet plain re-watch", c: kubelet1, code: 200, verb: "watch", resource: nodesim.Pods, items: 0, watch: true,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.Watch(ctx, own1, first.ResourceVersion, 0)
			},
			params: map[string]string{"watch": "true", "resourceVersion": first.ResourceVersion, "sendInitialEvents": "", "allowWatchBookmarks": "true"},
		},
		{
			name: "kubelet gets its Node", c: kubelet1, code: 200, verb: "get", resource: nodesim.Nodes, items: 1,
			do: func(ctx context.Context) (nodesim.Result, error) { return kubelet1.Get(ctx, nodesim.Nodes, "node-1") },
		},
		{
			name: "kubelet TokenReview (incident 004)", c: kubelet1, code: 201, verb: "create",
			resource: nodesim.Resource{Group: "authentication.k8s.io", Version: "v1", Resource: "tokenreviews"}, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return kubelet1.CreateTokenReview(ctx, cp.Token(controlplane.MetricsServer))
			},
		},
		{
			name: "ghost kubelet with a forwarded source IP", c: ghost, code: 200, verb: "list", resource: nodesim.Pods, items: 0,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return ghost.ListCache(ctx, nodesim.Pods.OnNode(ghostNode))
			},
		},
		{
			name: "ghost kubelet too-large resourceVersion", c: ghost, code: 504, verb: "list", resource: nodesim.CSIDrivers, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return ghost.ListTooLargeRV(ctx, nodesim.CSIDrivers, "")
			},
			message: "Too large resource version", slow: 2 * time.Second,
		},
		{
			name: "kube-proxy endpointslices", c: proxy, code: 200, verb: "list", resource: nodesim.EndpointSlices, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) { return proxy.ListCache(ctx, nodesim.EndpointSlices) },
		},
		{
			name: "kube-proxy lists pods", c: proxy, code: 403, verb: "list", resource: nodesim.Pods, items: -1,
			do: func(ctx context.Context) (nodesim.Result, error) { return proxy.ListCache(ctx, nodesim.Pods) },
		},
		{
			name: "calico-node networkpolicies", c: calico, code: 200, verb: "list", resource: nodesim.NetworkPolicies, items: 0,
			do: func(ctx context.Context) (nodesim.Result, error) {
				return calico.ListCache(ctx, nodesim.NetworkPolicies)
			},
		},
		{
			name: "cilium-agent consistent list of all pods", c: cilium, code: 200, verb: "list", resource: nodesim.Pods, items: total,
			do:     func(ctx context.Context) (nodesim.Result, error) { return cilium.ListConsistent(ctx, nodesim.Pods) },
			params: map[string]string{"resourceVersion": "", "fieldSelector": ""},
		},
	}

	results := make([]nodesim.Result, len(cases))
	for i, tc := range cases {
		res, err := tc.do(ctx)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		results[i] = res
		t.Logf("%s: %v", tc.name, res)
		if res.Code != tc.code {
			t.Errorf("%s: code %d, want %d (%s)", tc.name, res.Code, tc.code, res.Message)
		}
		if tc.items >= 0 && res.Items != tc.items {
			t.Errorf("%s: %d items, want %d", tc.name, res.Items, tc.items)
		}
		if !strings.Contains(res.Message, tc.message) {
			t.Errorf("%s: message %q lacks %q", tc.name, res.Message, tc.message)
		}
		if res.Duration < tc.slow {
			t.Errorf("%s: answered in %v, want at least %v", tc.name, res.Duration, tc.slow)
		}
		u, err := url.Parse(res.URI)
		if err != nil {
			t.Fatalf("%s: URI %q: %v", tc.name, res.URI, err)
		}
		for k, want := range tc.params {
			if got := u.Query().Get(k); got != want {
				t.Errorf("%s: URI %s: %s=%q, want %q", tc.name, res.URI, k, got, want)
			}
		}
	}

	// calls counts requests per (user, URI): some cases repeat a URI.
	calls := map[[2]string]int{{kubelet1.User, first.URI}: 1}
	for i, tc := range cases {
		calls[[2]string{tc.c.User, results[i].URI}]++
	}
	for i, tc := range cases {
		res := results[i]
		stages := []auditv1.Stage{auditv1.StageResponseComplete}
		if tc.watch {
			stages = append(stages, auditv1.StageResponseStarted)
		}
		got := audit.waitStages(t, tc.c.User, res.URI, stages...)
		for st, ev := range got {
			if ev.Verb != tc.verb || ev.UserAgent != tc.c.UserAgent || ev.ObjectRef == nil ||
				ev.ObjectRef.Resource != tc.resource.Resource || ev.ObjectRef.APIGroup != tc.resource.Group {
				t.Errorf("%s: %s event: verb %q ua %q objectRef %+v; want verb %q ua %q resource %s",
					tc.name, st, ev.Verb, ev.UserAgent, ev.ObjectRef, tc.verb, tc.c.UserAgent, tc.resource)
			}
			if ev.ResponseStatus == nil || int(ev.ResponseStatus.Code) != tc.code {
				t.Errorf("%s: %s event: responseStatus %+v, want code %d", tc.name, st, ev.ResponseStatus, tc.code)
			}
			wantIP := "127.0.0.1"
			if tc.c.SourceIP != "" {
				wantIP = tc.c.SourceIP
			}
			if len(ev.SourceIPs) == 0 || ev.SourceIPs[0] != wantIP {
				t.Errorf("%s: %s event: sourceIPs %v, want %s first", tc.name, st, ev.SourceIPs, wantIP)
			}
		}
		// Exactly one event per request and stage: counts are predictable.
		want := calls[[2]string{tc.c.User, res.URI}]
		for _, st := range stages {
			n := audit.waitCount(tc.c.User, res.URI, st, want)
			if n != want {
				t.Errorf("%s: %d %s events for %s, want %d (one per request)", tc.name, n, st, res.URI, want)
			}
		}
		if n := len(audit.matching(tc.c.User, res.URI)); n != want*len(stages) {
			t.Errorf("%s: %d events in all for %s, want %d (stages %v)", tc.name, n, res.URI, want*len(stages), stages)
		}
	}
}

// podCount is how many pods the admin sees on node ("" for all nodes).
func podCount(t *testing.T, e *testEnv, node string) int {
	t.Helper()
	opts := metav1.ListOptions{}
	if node != "" {
		opts.FieldSelector = "spec.nodeName=" + node
	}
	list, err := e.admin.CoreV1().Pods("").List(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}
