// Package controlplane ships the files that wire kube-apiserver to herd: the
// minimal audit policy (audit-policy.yaml), the audit webhook kubeconfig and
// the kubeadm and static-pod snippets (README.md). The Go code here exists so
// that `herd audit-policy` prints the very bytes of the shipped policy, and
// so that tests load those bytes into a real apiserver.
package controlplane

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// auditPolicy is audit-policy.yaml as shipped.
//
//go:embed audit-policy.yaml
var auditPolicy []byte

// extrasMarker is the comment line in audit-policy.yaml above which extra
// service accounts are inserted: the end of a node-side users list. There
// are agentRules such lists — the agents' lists (RequestReceived logged)
// and their watches (omitted) — and every one gets the extras.
const extrasMarker = "  # herd audit-policy --service-account NAMESPACE:NAME adds entries above this line.\n"

// agentRules is how many rules of audit-policy.yaml name the node-side agents.
const agentRules = 2

// ServiceAccount names a node-side agent's service account that the shipped
// policy does not list, e.g. a CNI agent installed in its own namespace.
type ServiceAccount struct {
	Namespace string
	Name      string
}

// Username is how the apiserver names the account in audit events and
// policies: system:serviceaccount:NAMESPACE:NAME.
func (sa ServiceAccount) Username() string {
	return "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
}

func (sa ServiceAccount) String() string { return sa.Namespace + ":" + sa.Name }

// ParseServiceAccount reads NAMESPACE:NAME and validates it as Kubernetes
// does: the namespace a DNS-1123 label, the name a DNS-1123 subdomain.
func ParseServiceAccount(s string) (ServiceAccount, error) {
	ns, name, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(name, ":") {
		return ServiceAccount{}, fmt.Errorf("service account %q: want NAMESPACE:NAME, e.g. kube-system:cilium", s)
	}
	sa := ServiceAccount{Namespace: ns, Name: name}
	if err := sa.validate(); err != nil {
		return ServiceAccount{}, err
	}
	return sa, nil
}

func (sa ServiceAccount) validate() error {
	switch {
	case sa.Namespace == "*":
		// herd's classification rules accept * for the namespace; an audit
		// policy's users are exact names and cannot.
		return fmt.Errorf("service account %q: audit policy users are exact names, so the namespace cannot be *; give each namespace the agent runs in", sa.String())
	case len(validation.IsDNS1123Label(sa.Namespace)) > 0:
		return fmt.Errorf("service account %q: namespace %q is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)", sa.String(), sa.Namespace)
	case len(validation.IsDNS1123Subdomain(sa.Name)) > 0:
		return fmt.Errorf("service account %q: name %q is not a valid service account name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)", sa.String(), sa.Name)
	}
	return nil
}

// AuditPolicy returns the minimal audit policy. With no extras it is
// audit-policy.yaml byte for byte. Extras are validated and added to the
// users whose list and watch requests are logged, in the order given;
// accounts the policy already names, and repeats, are added once.
func AuditPolicy(extra []ServiceAccount) ([]byte, error) {
	if len(extra) == 0 {
		return bytes.Clone(auditPolicy), nil
	}
	if bytes.Count(auditPolicy, []byte(extrasMarker)) != agentRules {
		// audit-policy.yaml lost a marker: a packaging bug, caught by the tests.
		return nil, fmt.Errorf("audit-policy.yaml: the line %q must appear %d times, once per node-side agents' rule", strings.TrimSpace(extrasMarker), agentRules)
	}
	var lines bytes.Buffer
	seen := map[string]bool{}
	for _, sa := range extra {
		if err := sa.validate(); err != nil {
			return nil, err
		}
		user := sa.Username()
		if seen[user] || bytes.Contains(auditPolicy, []byte("\n  - "+user+"\n")) {
			continue
		}
		seen[user] = true
		fmt.Fprintf(&lines, "  - %s\n", user)
	}
	return bytes.ReplaceAll(auditPolicy, []byte(extrasMarker), append(lines.Bytes(), extrasMarker...)), nil
}
