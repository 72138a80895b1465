package nodeclient

import (
	"strings"
	"testing"
)

func TestRoles(t *testing.T) {
	for r := RoleOther; r < NumRoles; r++ {
		got, err := ParseRole(r.String())
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %v, %v", r.String(), got, err)
		}
	}
	if Role(200).String() != "other" {
		t.Errorf("an out-of-range role is %q", Role(200).String())
	}
	_, err := ParseRole("scheduler")
	if want := `unknown role "scheduler" (want one of other, kubelet, kube-proxy, cni, metrics-server)`; err == nil || err.Error() != want {
		t.Errorf("err %v, want %s", err, want)
	}
}

func TestValidClientName(t *testing.T) {
	for _, s := range []string{"kubelet", "calico-node", "amazon-vpc-cni.k8s", "a", "0"} {
		if !ValidClientName(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "My_CNI", "-a", "a-", "a b", "cilium\n", string(make([]byte, 64))} {
		if ValidClientName(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestIdentities(t *testing.T) {
	if n, ok := NodeName("system:node:node-1"); !ok || n != "node-1" {
		t.Errorf("NodeName = %q, %v", n, ok)
	}
	if _, ok := NodeName("system:node:"); ok {
		t.Error("NodeName accepts an empty name")
	}
	if ns, n, ok := ServiceAccount("system:serviceaccount:kube-system:cilium"); !ok || ns != "kube-system" || n != "cilium" {
		t.Errorf("ServiceAccount = %q %q %v", ns, n, ok)
	}
	for _, id := range []string{"system:serviceaccount:kube-system", "system:serviceaccount::x", "system:serviceaccount:a:", "system:serviceaccount:a:b:c", "system:node:x"} {
		if _, _, ok := ServiceAccount(id); ok {
			t.Errorf("ServiceAccount(%q) ok", id)
		}
	}
	for id, want := range map[string]bool{"": true, "system:anonymous": true, "system:unauthenticated": true,
		"system:node:node-1": false, "system:serviceaccount:calico-system:calico-node": false, "admin": false} {
		if Unauthenticated(id) != want {
			t.Errorf("Unauthenticated(%q) = %v", id, !want)
		}
	}
}

func TestAgentSubjects(t *testing.T) {
	byClient := map[string]Agent{}
	for _, a := range DefaultAgents() {
		byClient[a.Client] = a
	}
	for client, want := range map[string][]string{
		"kubelet":     {"group:system:nodes"},
		"kube-proxy":  {"system:kube-proxy", "system:serviceaccount:kube-system:kube-proxy"},
		"calico-node": {"system:serviceaccount:kube-system:calico-node", "system:serviceaccount:calico-system:calico-node"},
	} {
		var got []string
		for _, s := range byClient[client].Subjects() {
			got = append(got, s.Identity())
			if back := SubjectOf(s.Identity()); back != s {
				t.Errorf("SubjectOf(%q) = %+v, want %+v", s.Identity(), back, s)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s subjects %v, want %v", client, got, want)
		}
	}
	for g, broad := range map[string]bool{"system:nodes": false, "ops-agents": false, "*": true, "system:authenticated": true,
		"system:unauthenticated": true, "system:serviceaccounts": true, "system:serviceaccounts:kube-system": true, "system:masters": true} {
		if BroadGroup(g) != broad {
			t.Errorf("BroadGroup(%q) = %v", g, !broad)
		}
	}
	for _, r := range []string{"pods", "endpointslices.discovery.k8s.io", "ciliumnodes.cilium.io"} {
		if !ValidResource(r) {
			t.Errorf("%q refused", r)
		}
	}
	for _, r := range []string{"", "Pods", "pods/status", "pods.", "a b"} {
		if ValidResource(r) {
			t.Errorf("%q accepted", r)
		}
	}
}
