package nodeclient

import "testing"

// FuzzSubjectOf: an identity label value (from herd's own annotations, read
// back from Prometheus) parses into one subject whose identity is the same
// string, or, for an empty group, into nothing a FlowSchema could hold.
func FuzzSubjectOf(f *testing.F) {
	for _, s := range []string{"group:system:nodes", "system:serviceaccount:kube-system:cilium", "system:kube-proxy", "group:", "", "system:serviceaccount:a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		s := SubjectOf(id)
		set := 0
		for _, v := range []string{s.Group, s.User, s.ServiceAccount} {
			if v != "" {
				set++
			}
		}
		if set > 1 {
			t.Fatalf("SubjectOf(%q) = %+v: more than one kind", id, s)
		}
		if id == GroupIdentityPrefix {
			if set != 0 {
				t.Fatalf("SubjectOf(%q) = %+v, want an empty subject", id, s)
			}
			return
		}
		if got := s.Identity(); got != id {
			t.Fatalf("SubjectOf(%q).Identity() = %q", id, got)
		}
	})
}
