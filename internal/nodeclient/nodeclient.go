// Package nodeclient is the vocabulary the exporter and the responder share
// about node-side clients: their roles, what a client name may look like,
// and the identities they authenticate as. The exporter classifies audited
// requests with it; the responder validates alert labels and builds APF
// subjects with it. Both must agree, so it is written once, here.
package nodeclient

import (
	"fmt"
	"regexp"
	"strings"
)

// Role is the kind of node-side client.
type Role uint8

// The roles (SPEC §3.2). RoleOther is every caller that is not node-side.
const (
	RoleOther Role = iota
	RoleKubelet
	RoleKubeProxy
	RoleCNI
	RoleMetricsServer
	NumRoles // the number of roles; not a role
)

var roleNames = [NumRoles]string{"other", "kubelet", "kube-proxy", "cni", "metrics-server"}

func (r Role) String() string {
	if r < NumRoles {
		return roleNames[r]
	}
	return "other"
}

// ParseRole is the inverse of Role.String.
func ParseRole(s string) (Role, error) {
	for i, n := range roleNames {
		if n == s {
			return Role(i), nil
		}
	}
	return RoleOther, fmt.Errorf("unknown role %q (want one of %s)", s, strings.Join(roleNames[:], ", "))
}

// clientName is what a client name (a classification rule's "client", the
// client label of herd's series) looks like: a lowercase DNS label that may
// also hold dots (calico-node, cilium-agent, amazon-vpc-cni.k8s).
var clientName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

// ValidClientName reports whether s can be a client name. The exporter
// refuses rules whose client fails it, so a client label that fails it did
// not come from herd.
func ValidClientName(s string) bool { return clientName.MatchString(s) }

// resourceName is a resource as herd's resource label writes it: the
// plural, then .group for a resource outside the core group
// (endpointslices.discovery.k8s.io).
var resourceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}(\.[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$`)

// ValidResource reports whether s can be a resource label value.
func ValidResource(s string) bool { return resourceName.MatchString(s) }

// Identity prefixes the apiserver's authenticators give.
const (
	NodeUserPrefix           = "system:node:"
	ServiceAccountUserPrefix = "system:serviceaccount:"
	// NodesGroup is the group every kubelet identity is in.
	NodesGroup = "system:nodes"
	// Anonymous is the user of a request without credentials
	// (--anonymous-auth); AllUnauthenticated its group.
	Anonymous          = "system:anonymous"
	AllUnauthenticated = "system:unauthenticated"
)

// NodeName returns NAME for system:node:NAME.
func NodeName(identity string) (string, bool) {
	name, ok := strings.CutPrefix(identity, NodeUserPrefix)
	return name, ok && name != ""
}

// ServiceAccount returns the namespace and name of
// system:serviceaccount:NAMESPACE:NAME.
func ServiceAccount(identity string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(identity, ServiceAccountUserPrefix)
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	return namespace, name, ok && namespace != "" && name != "" && !strings.Contains(name, ":")
}

// Unauthenticated reports whether identity is what the apiserver gives a
// request it could not authenticate: the anonymous user, or a name in the
// system:unauthenticated namespace of names. Such a caller proves nothing
// about who it is, so herd never acts on its behalf or against an identity
// it merely claims (issue 16).
func Unauthenticated(identity string) bool {
	return identity == "" || identity == Anonymous || strings.HasPrefix(identity, AllUnauthenticated)
}
