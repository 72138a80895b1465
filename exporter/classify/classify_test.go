package classify

import (
	"reflect"
	"testing"
)

func TestClassifyDefaults(t *testing.T) {
	c, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, ua string
		want     Result
	}{
		{"system:node:node-1", "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", Result{Role: RoleKubelet, Client: "kubelet"}},
		{"system:node:node-1", "", Result{Role: RoleKubelet, Client: "kubelet"}},
		{"system:node:", "kubelet/v1.36.3", Other}, // no node name: not a kubelet identity
		{"nodeclient", "kubelet/v1.15.7", Result{Role: RoleKubelet, Client: "kubelet"}},
		{"system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3 (linux/amd64)", Result{Role: RoleKubeProxy, Client: "kube-proxy"}},
		{"system:kube-proxy", "", Result{Role: RoleKubeProxy, Client: "kube-proxy"}},
		{"system:serviceaccount:kube-system:calico-node", "calico-node/v3.30.0", Result{Role: RoleCNI, Client: "calico-node"}},
		{"system:serviceaccount:calico-system:calico-node", "Go-http-client/1.1", Result{Role: RoleCNI, Client: "calico-node"}},
		{"system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.0", Result{Role: RoleCNI, Client: "cilium-agent"}},
		{"system:serviceaccount:kube-flannel:flannel", "flanneld/0.26", Result{Role: RoleCNI, Client: "flannel"}},
		{"system:serviceaccount:kube-system:antrea-agent", "", Result{Role: RoleCNI, Client: "antrea-agent"}},
		{"system:serviceaccount:kube-system:kube-router", "", Result{Role: RoleCNI, Client: "kube-router"}},
		{"system:serviceaccount:kube-system:aws-node", "", Result{Role: RoleCNI, Client: "aws-node"}},
		{"system:serviceaccount:kube-system:metrics-server", "metrics-server/v0.7.2", Result{Role: RoleMetricsServer, Client: "metrics-server"}},
		// A user agent alone classifies (e.g. an agent run with a custom account).
		{"someone", "cilium-agent/1.18.0", Result{Role: RoleCNI, Client: "cilium-agent", ByUserAgent: true}},
		// The service-account rule is tried first: identity, whatever the user agent.
		{"system:serviceaccount:kube-system:cilium", "curl/8.0", Result{Role: RoleCNI, Client: "cilium-agent"}},
		// kube-system:cilium-operator is not the agent.
		{"system:serviceaccount:kube-system:cilium-operator", "cilium-operator/1.18", Other},
		{"system:kube-controller-manager", "kube-controller-manager/v1.36.3", Other},
		{"", "", Other},
		{"system:serviceaccount:", "", Other},
		{"system:serviceaccount:kube-system", "", Other},
	}
	for _, tc := range tests {
		for pass := 0; pass < 2; pass++ { // second pass hits the cache
			if got := c.Classify([]byte(tc.user), []byte(tc.ua)); got != tc.want {
				t.Errorf("Classify(%q, %q) pass %d = %+v, want %+v", tc.user, tc.ua, pass, got, tc.want)
			}
		}
	}
}

func TestUserRulesComeFirst(t *testing.T) {
	c, err := New([]Rule{
		{Role: "cni", Client: "my-cni", ServiceAccount: "net:agent"},
		{Role: "kubelet", Client: "virtual-kubelet", UsernamePrefix: "system:node:vk-", UserAgentPrefix: "virtual-kubelet/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Classify([]byte("system:serviceaccount:net:agent"), nil); got != (Result{Role: RoleCNI, Client: "my-cni"}) {
		t.Errorf("user rule: got %+v", got)
	}
	if got := c.Classify([]byte("system:node:vk-1"), []byte("virtual-kubelet/1.11")); got != (Result{Role: RoleKubelet, Client: "virtual-kubelet"}) {
		t.Errorf("two matchers: got %+v", got)
	}
	// Both matchers must hold: same identity, kubelet's own agent → default rule.
	if got := c.Classify([]byte("system:node:vk-1"), []byte("kubelet/v1.36")); got != (Result{Role: RoleKubelet, Client: "kubelet"}) {
		t.Errorf("partial match: got %+v", got)
	}
	want := []string{"other", "unauthenticated", "my-cni", "virtual-kubelet", "kubelet"}
	got := c.Clients()
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("Clients() = %v, want prefix %v", got, want)
		}
	}
}

func TestInvalidRules(t *testing.T) {
	tests := []struct {
		rule Rule
		err  string
	}{
		{Rule{Role: "kubelet", Client: "k"}, "rules[0]: set at least one of username, usernamePrefix, serviceAccount, userAgentPrefix"},
		{Rule{Role: "scheduler", Client: "k", Username: "x"}, `rules[0]: unknown role "scheduler" (want one of other, kubelet, kube-proxy, cni, metrics-server)`},
		{Rule{Role: "cni", Client: "My_CNI", Username: "x"}, `rules[0]: client "My_CNI" must be a lowercase DNS label (a-z, 0-9, '-', '.')`},
		{Rule{Role: "cni", Client: "", Username: "x"}, `rules[0]: client "" must be a lowercase DNS label (a-z, 0-9, '-', '.')`},
		{Rule{Role: "cni", Client: "c", ServiceAccount: "agent"}, `rules[0]: serviceAccount "agent" must be NAMESPACE:NAME (NAMESPACE may be *)`},
		{Rule{Role: "cni", Client: "c", ServiceAccount: "a:b:c"}, `rules[0]: serviceAccount "a:b:c" must be NAMESPACE:NAME (NAMESPACE may be *)`},
	}
	for _, tc := range tests {
		_, err := New([]Rule{tc.rule})
		if err == nil || err.Error() != tc.err {
			t.Errorf("New(%+v) error = %v, want %q", tc.rule, err, tc.err)
		}
	}
}

func TestCacheIsBounded(t *testing.T) {
	c, _ := New(nil)
	c.maxCache = 100
	for i := 0; i < 1000; i++ {
		c.Classify([]byte("system:node:n"), []byte{byte(i), byte(i >> 8)})
	}
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].m)
	}
	if n > 100 || n == 0 {
		t.Fatalf("cache holds %d entries, bound is 100", n)
	}
}

func TestNodeFromUsername(t *testing.T) {
	for user, want := range map[string]string{"system:node:node-1": "node-1", "system:node:": "", "nodeclient": "", "system:nodes": ""} {
		if got := string(NodeFromUsername([]byte(user))); got != want {
			t.Errorf("NodeFromUsername(%q) = %q, want %q", user, got, want)
		}
	}
}

func BenchmarkClassifyCached(b *testing.B) {
	c, _ := New(nil)
	user, ua := []byte("system:serviceaccount:kube-system:cilium"), []byte("cilium-agent/1.18.0 (linux/amd64)")
	c.Classify(user, ua)
	b.ReportAllocs()
	for b.Loop() {
		c.Classify(user, ua)
	}
}

// A client matched by its user agent alone is marked: it chose that
// classification. A rule with an identity matcher (and a user agent) is not
// user-agent-only.
func TestByUserAgentMarksClientChosenClassifications(t *testing.T) {
	c, err := New([]Rule{{Role: "kubelet", Client: "virtual-kubelet", UsernamePrefix: "system:node:vk-", UserAgentPrefix: "virtual-kubelet/"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user, ua string
		byUA     bool
	}{
		{"system:node:vk-1", "virtual-kubelet/1.11", false},
		{"system:serviceaccount:default:app", "calico-node/v3.30.0", true},
		{"system:serviceaccount:calico-system:calico-node", "calico-node/v3.30.0", false},
	} {
		if got := c.Classify([]byte(tc.user), []byte(tc.ua)); got.ByUserAgent != tc.byUA || got.Role == RoleOther {
			t.Errorf("Classify(%q, %q) = %+v, want ByUserAgent %v", tc.user, tc.ua, got, tc.byUA)
		}
	}
	if _, err := New([]Rule{{Role: "cni", Client: "unauthenticated", UserAgentPrefix: "x/"}}); err == nil ||
		err.Error() != `rules[0]: client "unauthenticated" is reserved for requests without credentials` {
		t.Errorf("reserved client name: %v", err)
	}
}

// TestDefaultRulesUnchanged pins the default rules as they were written
// before the agents moved to internal/nodeclient: the same matchers, in the
// same order (the first match wins).
func TestDefaultRulesUnchanged(t *testing.T) {
	want := []Rule{
		{Role: "kubelet", Client: "kubelet", UsernamePrefix: "system:node:"},
		{Role: "kubelet", Client: "kubelet", Username: "nodeclient"},
		{Role: "kube-proxy", Client: "kube-proxy", Username: "system:kube-proxy"},
		{Role: "kube-proxy", Client: "kube-proxy", ServiceAccount: "kube-system:kube-proxy"},
		{Role: "kube-proxy", Client: "kube-proxy", UserAgentPrefix: "kube-proxy/"},
		{Role: "cni", Client: "calico-node", ServiceAccount: "*:calico-node"},
		{Role: "cni", Client: "calico-node", UserAgentPrefix: "calico-node/"},
		{Role: "cni", Client: "cilium-agent", ServiceAccount: "*:cilium"},
		{Role: "cni", Client: "cilium-agent", UserAgentPrefix: "cilium-agent/"},
		{Role: "cni", Client: "flannel", ServiceAccount: "*:flannel"},
		{Role: "cni", Client: "flannel", UserAgentPrefix: "flanneld/"},
		{Role: "cni", Client: "antrea-agent", ServiceAccount: "*:antrea-agent"},
		{Role: "cni", Client: "antrea-agent", UserAgentPrefix: "antrea-agent/"},
		{Role: "cni", Client: "kube-router", ServiceAccount: "*:kube-router"},
		{Role: "cni", Client: "kube-router", UserAgentPrefix: "kube-router/"},
		{Role: "cni", Client: "aws-node", ServiceAccount: "kube-system:aws-node"},
		{Role: "cni", Client: "aws-node", UserAgentPrefix: "aws-node/"},
		{Role: "cni", Client: "aws-node", UserAgentPrefix: "amazon-vpc-cni-k8s/"},
		{Role: "metrics-server", Client: "metrics-server", ServiceAccount: "*:metrics-server"},
		{Role: "metrics-server", Client: "metrics-server", UserAgentPrefix: "metrics-server/"},
	}
	if got := DefaultRules(); !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultRules:\n%+v\nwant\n%+v", got, want)
	}
}
