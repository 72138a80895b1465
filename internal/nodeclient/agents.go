package nodeclient

import "strings"

// Agent is a node-side agent herd knows without configuration: its role,
// its client name and the identities it authenticates as. The exporter
// classifies audited requests by these identities (and user agents); the
// responder's APF measurement puts the same identities in FlowSchema
// subjects. Written once, here, so that what herd classifies and what it
// measures cannot drift apart.
type Agent struct {
	Role   Role
	Client string
	// UsernamePrefix matches every identity of the agent's fleet
	// (system:node: for kubelets); Group is the group every such identity
	// is in (system:nodes), which is how an APF subject names the fleet.
	UsernamePrefix string
	Group          string
	// Usernames the agent authenticates as exactly (system:kube-proxy, a
	// client certificate's CN).
	Usernames []string
	// ServiceAccount is the name of the agent's service account;
	// ServiceAccountNamespaces are where its upstream manifests, charts and
	// operators put it. Classification matches the name in any namespace
	// when AnyNamespace is set, else only in those namespaces; an APF
	// subject needs a namespace, so measurement uses those namespaces.
	ServiceAccount           string
	ServiceAccountNamespaces []string
	AnyNamespace             bool
	// UserAgentPrefixes match the start of the User-Agent header: a label
	// the client chose, never an identity (SPEC §3.1).
	UserAgentPrefixes []string
	// LegacyUsernames are identities classification still knows but
	// measurement does not put in FlowSchemas (AKS before 1.16 ran every
	// kubelet as one shared user).
	LegacyUsernames []string
}

// DefaultAgents lists the node-side agents herd knows, in the order
// classification tries them.
func DefaultAgents() []Agent {
	return []Agent{
		{Role: RoleKubelet, Client: "kubelet", UsernamePrefix: NodeUserPrefix, Group: NodesGroup,
			LegacyUsernames: []string{"nodeclient"}},
		{Role: RoleKubeProxy, Client: "kube-proxy", Usernames: []string{"system:kube-proxy"},
			ServiceAccount: "kube-proxy", ServiceAccountNamespaces: []string{"kube-system"},
			UserAgentPrefixes: []string{"kube-proxy/"}},
		// The Tigera operator installs calico-node in calico-system; the
		// manifest install in kube-system.
		{Role: RoleCNI, Client: "calico-node", ServiceAccount: "calico-node", ServiceAccountNamespaces: []string{"kube-system", "calico-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"calico-node/"}},
		{Role: RoleCNI, Client: "cilium-agent", ServiceAccount: "cilium", ServiceAccountNamespaces: []string{"kube-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"cilium-agent/"}},
		{Role: RoleCNI, Client: "flannel", ServiceAccount: "flannel", ServiceAccountNamespaces: []string{"kube-flannel", "kube-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"flanneld/"}},
		{Role: RoleCNI, Client: "antrea-agent", ServiceAccount: "antrea-agent", ServiceAccountNamespaces: []string{"kube-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"antrea-agent/"}},
		{Role: RoleCNI, Client: "kube-router", ServiceAccount: "kube-router", ServiceAccountNamespaces: []string{"kube-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"kube-router/"}},
		{Role: RoleCNI, Client: "aws-node", ServiceAccount: "aws-node", ServiceAccountNamespaces: []string{"kube-system"},
			UserAgentPrefixes: []string{"aws-node/", "amazon-vpc-cni-k8s/"}},
		{Role: RoleMetricsServer, Client: "metrics-server", ServiceAccount: "metrics-server", ServiceAccountNamespaces: []string{"kube-system"},
			AnyNamespace: true, UserAgentPrefixes: []string{"metrics-server/"}},
	}
}

// Subjects are the identities of the agent as APF subjects name them: its
// fleet's group, its exact usernames and its service account in each of
// its namespaces, in that order.
func (a Agent) Subjects() []Subject {
	var out []Subject
	if a.Group != "" {
		out = append(out, Subject{Group: a.Group})
	}
	for _, u := range a.Usernames {
		out = append(out, Subject{User: u})
	}
	if a.ServiceAccount != "" {
		for _, ns := range a.ServiceAccountNamespaces {
			out = append(out, Subject{ServiceAccount: ns + ":" + a.ServiceAccount})
		}
	}
	return out
}

// Subject is one identity as a FlowSchema subject names it: exactly one of
// a group, a user, or a service account NAMESPACE:NAME.
type Subject struct {
	Group          string `json:"group,omitempty"`
	User           string `json:"user,omitempty"`
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// GroupIdentityPrefix marks a group in an identity string: herd's identity
// labels are usernames, and a group is no user.
const GroupIdentityPrefix = "group:"

// Identity is the subject as herd's identity labels and annotations write
// it: the username of a user or service account
// (system:serviceaccount:NAMESPACE:NAME), group:NAME for a group.
func (s Subject) Identity() string {
	switch {
	case s.Group != "":
		return GroupIdentityPrefix + s.Group
	case s.ServiceAccount != "":
		return ServiceAccountUserPrefix + s.ServiceAccount
	}
	return s.User
}

// SubjectOf is the inverse of Subject.Identity.
func SubjectOf(identity string) Subject {
	if g, ok := strings.CutPrefix(identity, GroupIdentityPrefix); ok {
		return Subject{Group: g}
	}
	if ns, name, ok := ServiceAccount(identity); ok {
		return Subject{ServiceAccount: ns + ":" + name}
	}
	return Subject{User: identity}
}

// BroadGroup reports whether group takes in callers that are not one
// node-side agent's fleet: every authenticated or unauthenticated caller,
// every service account (of a namespace), the cluster's admins. herd never
// measures or isolates such a group as if it were one client.
func BroadGroup(group string) bool {
	switch group {
	case "*", "system:authenticated", AllUnauthenticated, "system:serviceaccounts", "system:masters", "system:monitoring":
		return true
	}
	return strings.HasPrefix(group, "system:serviceaccounts:")
}
