package controlplane_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	auditinternal "k8s.io/apiserver/pkg/apis/audit"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
	"k8s.io/apiserver/pkg/apis/audit/validation"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/exporter/classify"
	controlplane "github.com/herd-k8s/herd/manifests/control-plane"
)

func TestAuditPolicyIsTheShippedFile(t *testing.T) {
	want := readFile(t, "audit-policy.yaml")
	got, err := controlplane.AuditPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("AuditPolicy(nil) differs from audit-policy.yaml")
	}
	// The caller owns what it gets.
	got[0] = 'X'
	again, _ := controlplane.AuditPolicy(nil)
	if !bytes.Equal(again, want) {
		t.Fatal("AuditPolicy returned the embedded bytes themselves")
	}
}

// load decodes a policy strictly (an unknown field is an error; kube-apiserver
// would only warn and drop it) and validates it with the apiserver's own
// validation.
func load(t *testing.T, b []byte) *auditv1.Policy {
	t.Helper()
	var p auditv1.Policy
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("strict decoding: %v", err)
	}
	if p.APIVersion != "audit.k8s.io/v1" || p.Kind != "Policy" {
		t.Fatalf("apiVersion %q kind %q, want audit.k8s.io/v1 Policy", p.APIVersion, p.Kind)
	}
	var internal auditinternal.Policy
	if err := auditv1.Convert_v1_Policy_To_audit_Policy(&p, &internal, nil); err != nil {
		t.Fatal(err)
	}
	if errs := validation.ValidatePolicy(&internal); len(errs) > 0 {
		t.Fatalf("kube-apiserver would refuse the policy: %v", errs.ToAggregate())
	}
	return &p
}

// users is every user a Metadata rule names.
func users(p *auditv1.Policy) []string {
	var u []string
	for _, r := range p.Rules {
		u = append(u, r.Users...)
	}
	return u
}

// TestShippedPolicyShape pins what makes the policy minimal: Metadata level
// only, only list and watch or create tokenreviews, never an unrestricted
// rule, and None for the rest; RequestReceived only for lists (issue 12's
// fast path: a relist wave shows when it starts). policy_test.go checks the
// same against the real apiserver's decisions.
func TestShippedPolicyShape(t *testing.T) {
	b, _ := controlplane.AuditPolicy(nil)
	p := load(t, b)
	if len(p.OmitStages) != 0 {
		t.Errorf("omitStages = %v: a policy-wide omission would drop the lists' RequestReceived (rules omit it themselves)", p.OmitStages)
	}
	if len(p.Rules) != 6 {
		t.Fatalf("%d rules, want 6 (kubelet lists, agent lists, kubelet watches, agent watches, kubelet TokenReviews, None)", len(p.Rules))
	}
	for i, r := range p.Rules[:5] {
		if r.Level != auditv1.LevelMetadata {
			t.Errorf("rule %d: level %s, want Metadata: herd reads no bodies", i, r.Level)
		}
		if len(r.Users) == 0 && len(r.UserGroups) == 0 {
			t.Errorf("rule %d matches every user", i)
		}
		if len(r.NonResourceURLs) > 0 || len(r.Namespaces) > 0 {
			t.Errorf("rule %d: unexpected nonResourceURLs or namespaces: %+v", i, r)
		}
		switch {
		case slices.Equal(r.Verbs, []string{"list"}) && len(r.Resources) == 0:
			if len(r.OmitStages) != 0 {
				t.Errorf("rule %d (lists) omits %v: the fast path needs a list's RequestReceived", i, r.OmitStages)
			}
			continue
		case slices.Equal(r.Verbs, []string{"watch"}) && len(r.Resources) == 0:
		case slices.Equal(r.Verbs, []string{"create"}) && slices.Equal(r.UserGroups, []string{"system:nodes"}) && len(r.Users) == 0 &&
			len(r.Resources) == 1 && r.Resources[0].Group == "authentication.k8s.io" && slices.Equal(r.Resources[0].Resources, []string{"tokenreviews"}):
		default:
			t.Errorf("rule %d logs more than list, watch or kubelets' create tokenreviews: %+v", i, r)
		}
		if !slices.Equal(r.OmitStages, []auditv1.Stage{auditv1.StageRequestReceived}) {
			t.Errorf("rule %d (%v) omits %v, want [RequestReceived]", i, r.Verbs, r.OmitStages)
		}
	}
	last := p.Rules[5]
	if last.Level != auditv1.LevelNone || len(last.Users)+len(last.UserGroups)+len(last.Verbs)+len(last.Resources)+len(last.Namespaces)+len(last.NonResourceURLs) != 0 {
		t.Errorf("last rule must be a bare level: None, got %+v", last)
	}
	for _, i := range []int{0, 2} {
		if !slices.Equal(p.Rules[i].UserGroups, []string{"system:nodes"}) || len(p.Rules[i].Users) != 0 {
			t.Errorf("rule %d must be kubelets (group system:nodes): %+v", i, p.Rules[i])
		}
	}
	// The agents' lists and watches name the same users.
	if !slices.Equal(p.Rules[1].Users, p.Rules[3].Users) || len(p.Rules[1].Users) == 0 {
		t.Errorf("the agents' list rule names %v, their watch rule %v: want the same users", p.Rules[1].Users, p.Rules[3].Users)
	}
}

// TestPolicyCoversDefaultRules keeps the users list in step with herd's
// default classification rules: every node-side service account or user a
// default rule names is logged, in at least one namespace when the rule
// accepts any.
func TestPolicyCoversDefaultRules(t *testing.T) {
	b, _ := controlplane.AuditPolicy(nil)
	listed := users(load(t, b))
	for _, r := range classify.DefaultRules() {
		if r.Role == "metrics-server" || r.Role == "other" {
			continue // not node-side: herd needs none of their lists
		}
		switch {
		case r.UsernamePrefix == "system:node:":
			// Kubelets: rule 0, group system:nodes (TestShippedPolicyShape).
		case r.Username == "nodeclient":
			// AKS before 1.16 shared one kubelet identity; AKS runs its own
			// audit policy, so this file never meets it.
		case r.Username != "":
			if !slices.Contains(listed, r.Username) {
				t.Errorf("default rule %+v: user %s is not logged", r, r.Username)
			}
		case r.ServiceAccount != "":
			ns, name, _ := strings.Cut(r.ServiceAccount, ":")
			if ns != "*" {
				if u := serviceaccount.MakeUsername(ns, name); !slices.Contains(listed, u) {
					t.Errorf("default rule %+v: %s is not logged", r, u)
				}
				continue
			}
			found := slices.ContainsFunc(listed, func(u string) bool {
				return strings.HasPrefix(u, "system:serviceaccount:") && strings.HasSuffix(u, ":"+name)
			})
			if !found {
				t.Errorf("default rule %+v: no namespace's %s is logged", r, name)
			}
		}
	}
}

func TestAuditPolicyExtras(t *testing.T) {
	extras := []controlplane.ServiceAccount{
		{Namespace: "net-system", Name: "my-cni"},
		{Namespace: "kube-system", Name: "cilium"}, // already listed
		{Namespace: "cilium", Name: "cilium"},
		{Namespace: "net-system", Name: "my-cni"}, // repeated
		{Namespace: "net", Name: "agent.v2"},      // names are DNS-1123 subdomains
	}
	got, err := controlplane.AuditPolicy(extras)
	if err != nil {
		t.Fatal(err)
	}
	shipped, _ := controlplane.AuditPolicy(nil)
	added := "  - system:serviceaccount:net-system:my-cni\n" +
		"  - system:serviceaccount:cilium:cilium\n" +
		"  - system:serviceaccount:net:agent.v2\n"
	marker := "  # herd audit-policy --service-account"
	want := strings.ReplaceAll(string(shipped), "  - system:serviceaccount:kube-system:aws-node\n"+marker,
		"  - system:serviceaccount:kube-system:aws-node\n"+added+marker)
	if want == string(shipped) {
		t.Fatal("test is stale: aws-node is no longer the last listed user")
	}
	if string(got) != want {
		t.Fatalf("policy with extras:\n%s\nwant:\n%s", got, want)
	}
	p := load(t, got)
	if n := len(users(p)); n != len(users(load(t, shipped)))+6 {
		t.Errorf("%d users with extras, want the shipped ones + 3 in each of the two agents' rules", n)
	}
	for _, i := range []int{1, 3} {
		if !slices.Contains(p.Rules[i].Users, "system:serviceaccount:net-system:my-cni") {
			t.Errorf("extras are not in the node-side agents' rule %d: %+v", i, p.Rules[i])
		}
	}
}

func TestParseServiceAccount(t *testing.T) {
	good := map[string]controlplane.ServiceAccount{
		"kube-system:cilium":             {Namespace: "kube-system", Name: "cilium"},
		"net:agent.v2":                   {Namespace: "net", Name: "agent.v2"},
		"a:b":                            {Namespace: "a", Name: "b"},
		"x1:" + strings.Repeat("a", 253): {Namespace: "x1", Name: strings.Repeat("a", 253)},
	}
	for in, want := range good {
		got, err := controlplane.ParseServiceAccount(in)
		if err != nil || got != want {
			t.Errorf("ParseServiceAccount(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		if got.Username() != "system:serviceaccount:"+in {
			t.Errorf("%q: Username() = %q", in, got.Username())
		}
	}
	bad := map[string]string{
		"cilium":                       `service account "cilium": want NAMESPACE:NAME, e.g. kube-system:cilium`,
		"a:b:c":                        `service account "a:b:c": want NAMESPACE:NAME, e.g. kube-system:cilium`,
		"*:cilium":                     `service account "*:cilium": audit policy users are exact names, so the namespace cannot be *; give each namespace the agent runs in`,
		":cilium":                      `service account ":cilium": namespace "" is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)`,
		"Kube-System:cilium":           `service account "Kube-System:cilium": namespace "Kube-System" is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)`,
		"kube.system:cilium":           `service account "kube.system:cilium": namespace "kube.system" is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)`,
		"kube-system:":                 `service account "kube-system:": name "" is not a valid service account name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)`,
		"kube-system:my_agent":         `service account "kube-system:my_agent": name "my_agent" is not a valid service account name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)`,
		"kube-system:agent\n- x":       `service account "kube-system:agent\n- x": name "agent\n- x" is not a valid service account name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)`,
		strings.Repeat("a", 64) + ":b": `service account "` + strings.Repeat("a", 64) + `:b": namespace "` + strings.Repeat("a", 64) + `" is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)`,
	}
	for in, want := range bad {
		_, err := controlplane.ParseServiceAccount(in)
		if err == nil || err.Error() != want {
			t.Errorf("ParseServiceAccount(%q) error = %v\nwant %s", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseServiceAccount(%q): error is not one line", in)
		}
	}
	// AuditPolicy validates structs it is handed directly, too: an
	// unvalidated name could inject YAML into the policy.
	if _, err := controlplane.AuditPolicy([]controlplane.ServiceAccount{{Namespace: "kube-system", Name: "x\n- level: None"}}); err == nil {
		t.Error("AuditPolicy accepted a name with a newline")
	}
}
