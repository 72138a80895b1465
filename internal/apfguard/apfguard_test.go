package apfguard

import (
	"testing"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/apiserver/pkg/apis/flowcontrol/bootstrap"
)

// TestSubjectOf: the forecast's subject labels become FlowSchema subjects
// only for identities herd may put in one.
func TestSubjectOf(t *testing.T) {
	for _, tc := range []struct {
		in, identity, why string
		kind              flowcontrolv1.SubjectKind
	}{
		{"group:system:nodes", "system:node:any", "", flowcontrolv1.SubjectKindGroup},
		{"serviceaccount:kube-system:cilium", "system:serviceaccount:kube-system:cilium", "", flowcontrolv1.SubjectKindServiceAccount},
		{"user:system:kube-proxy", "system:kube-proxy", "", flowcontrolv1.SubjectKindUser},
		{"group:system:authenticated", "", "herd puts no group but system:nodes in a FlowSchema: another group may hold unrelated users", ""},
		{"serviceaccount:kube-system:*", "", "contains *, APF's wildcard", ""},
		{"serviceaccount:Kube_System:x", "", "not a service account namespace and name", ""},
		{"user:system:anonymous", "", "unauthenticated: nothing proves who sent it", ""},
		{"user:a\nb", "", "not a user name", ""},
		{"pod:x", "", "not a subject herd knows (group:, serviceaccount:, user:)", ""},
	} {
		sub, id, why := SubjectOf(tc.in)
		if id != tc.identity || why != tc.why || sub.Kind != tc.kind {
			t.Errorf("%q: %q %q %q, want %q %q %q", tc.in, sub.Kind, id, why, tc.kind, tc.identity, tc.why)
		}
	}
}

// TestPrecedence: before the serving schema, never at or before
// system-node-high.
func TestPrecedence(t *testing.T) {
	for _, tc := range []struct {
		serving, want int32
		ok            bool
	}{{900, 440, true}, {440, 439, true}, {402, 401, true}, {401, 400, false}, {100, 99, false}} {
		if got, ok := Precedence(ProtectPrecedence, tc.serving); got != tc.want || ok != tc.ok {
			t.Errorf("serving at %d: %d %v, want %d %v", tc.serving, got, ok, tc.want, tc.ok)
		}
	}
}

// TestSeats: the suggested levels' nominal seats on a default apiserver,
// as kube-apiserver 1.36.3 reports them (apiserver_flowcontrol_nominal_limit_seats:
// workload-high 98 of 600 with 245 shares in all).
func TestSeats(t *testing.T) {
	levels := append(append([]*flowcontrolv1.PriorityLevelConfiguration{}, bootstrap.MandatoryPriorityLevelConfigurations...), bootstrap.SuggestedPriorityLevelConfigurations...)
	seats := Seats(DefaultServerConcurrency, levels)
	if seats["workload-high"] != 98 || seats["global-default"] != 49 || seats["catch-all"] != 13 {
		t.Errorf("seats %v", seats)
	}
	if _, ok := seats["exempt"]; ok {
		t.Error("the exempt level has no limit")
	}
	// A 10-seat LIST in a 98-seat level of hand 6: at most ceil(0.15 × 98) = 15 wide, 9 at once.
	if n := AdmittedLists(98, 6, 10); n != 9 {
		t.Errorf("admitted %d", n)
	}
}
