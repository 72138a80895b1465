package auditcount

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCount pins the independent counting rules on a hand-written log: one
// event per line, as the apiserver's log backend writes them.
func TestCount(t *testing.T) {
	lines := []string{
		// a cache LIST by a kubelet: counted at ResponseComplete
		`{"auditID":"a","stage":"ResponseStarted","verb":"list","requestURI":"/api/v1/pods?resourceVersion=0","user":{"username":"system:node:n1"},"objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`,
		`{"auditID":"a","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods?resourceVersion=0","user":{"username":"system:node:n1"},"objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`,
		// a later page: a page, not a relist
		`{"auditID":"b","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods?limit=500&continue=xyz","user":{"username":"system:node:n1"},"objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`,
		// a WatchList relist by kube-proxy: counted at ResponseStarted, consistent
		`{"auditID":"c","stage":"ResponseStarted","verb":"watch","requestURI":"/apis/discovery.k8s.io/v1/endpointslices?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&watch=true","user":{"username":"system:serviceaccount:kube-system:kube-proxy"},"objectRef":{"resource":"endpointslices","apiGroup":"discovery.k8s.io"},"responseStatus":{"code":200}}`,
		`{"auditID":"c","stage":"ResponseComplete","verb":"watch","requestURI":"/apis/discovery.k8s.io/v1/endpointslices?sendInitialEvents=true&resourceVersionMatch=NotOlderThan&watch=true","user":{"username":"system:serviceaccount:kube-system:kube-proxy"},"objectRef":{"resource":"endpointslices","apiGroup":"discovery.k8s.io"},"responseStatus":{"code":200}}`,
		// a plain re-watch: a request, not a relist
		`{"auditID":"d","stage":"ResponseStarted","verb":"watch","requestURI":"/api/v1/pods?resourceVersion=7&watch=true","user":{"username":"system:node:n1"},"objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`,
		// a too-large LIST, exact
		`{"auditID":"e","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods?resourceVersion=99&resourceVersionMatch=Exact","user":{"username":"system:node:n1"},"objectRef":{"resource":"pods"},"responseStatus":{"code":504,"message":"Too large resource version: 99, current: 7"}}`,
		// a TokenReview by a kubelet
		`{"auditID":"f","stage":"ResponseComplete","verb":"create","requestURI":"/apis/authentication.k8s.io/v1/tokenreviews","user":{"username":"system:node:n1"},"objectRef":{"resource":"tokenreviews","apiGroup":"authentication.k8s.io"},"responseStatus":{"code":201}}`,
		// refused (403): a request, not a relist, and its made-up resource takes no name
		`{"auditID":"h","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/madeup","user":{"username":"system:node:n1"},"objectRef":{"resource":"madeup"},"responseStatus":{"code":403}}`,
		// without credentials: role other, client unauthenticated, whatever its user agent
		`{"auditID":"i","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods","user":{"username":"system:anonymous","groups":["system:unauthenticated"]},"userAgent":"calico-node/v3.30.0","objectRef":{"resource":"pods"},"responseStatus":{"code":200}}`,
		// per-object reflector and a selected list
		`{"auditID":"j","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dcm&resourceVersion=0","user":{"username":"system:node:n1"},"objectRef":{"resource":"configmaps","namespace":"a"},"responseStatus":{"code":200}}`,
		`{"auditID":"k","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/services?fieldSelector=spec.clusterIP%21%3DNone&resourceVersion=0","user":{"username":"system:node:n1"},"objectRef":{"resource":"services"},"responseStatus":{"code":200}}`,
		// never delivered to herd: not counted with the delivered set
		`{"auditID":"g","stage":"ResponseComplete","verb":"get","requestURI":"/api/v1/nodes/n1","user":{"username":"system:node:n1"},"objectRef":{"resource":"nodes"},"responseStatus":{"code":200}}`,
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	delivered := map[Key]bool{}
	for _, k := range []Key{{"a", "ResponseStarted"}, {"a", "ResponseComplete"}, {"b", "ResponseComplete"}, {"c", "ResponseStarted"}, {"c", "ResponseComplete"},
		{"d", "ResponseStarted"}, {"e", "ResponseComplete"}, {"f", "ResponseComplete"}, {"z", "ResponseComplete"},
		{"h", "ResponseComplete"}, {"i", "ResponseComplete"}, {"j", "ResponseComplete"}, {"k", "ResponseComplete"}} {
		delivered[k] = true
	}
	res, err := Count(path, delivered, NodeAgents)
	if err != nil {
		t.Fatal(err)
	}
	want := Series{
		"herd_requests_total{client=kubelet,code=200,role=kubelet,verb=list}":                                                             4,
		"herd_requests_total{client=kubelet,code=403,role=kubelet,verb=list}":                                                             1,
		"herd_requests_total{client=unauthenticated,code=200,role=other,verb=list}":                                                       1,
		"herd_requests_total{client=kubelet,code=504,role=kubelet,verb=list}":                                                             1,
		"herd_requests_total{client=kubelet,code=200,role=kubelet,verb=watch}":                                                            1,
		"herd_requests_total{client=kubelet,code=201,role=kubelet,verb=create}":                                                           1,
		"herd_requests_total{client=kube-proxy,code=200,role=kube-proxy,verb=watch}":                                                      1,
		"herd_relists_total{client=kubelet,consistency=cache,resource=pods,role=kubelet,shape=all}":                                       1,
		"herd_relists_total{client=kubelet,consistency=exact,resource=pods,role=kubelet,shape=all}":                                       1,
		"herd_relists_total{client=kubelet,consistency=cache,resource=configmaps,role=kubelet,shape=object}":                              1,
		"herd_relists_total{client=kubelet,consistency=cache,resource=services,role=kubelet,shape=selected}":                              1,
		"herd_relists_total{client=unauthenticated,consistency=consistent,resource=pods,role=other,shape=all}":                            1,
		"herd_relists_total{client=kube-proxy,consistency=consistent,resource=endpointslices.discovery.k8s.io,role=kube-proxy,shape=all}": 1,
		"herd_list_pages_total{client=kubelet,resource=pods,role=kubelet}":                                                                1,
		"herd_too_large_resource_version_total{client=kubelet,detected_by=status,resource=pods,role=kubelet}":                             1,
		"herd_tokenreviews_total{client=kubelet,role=kubelet}":                                                                            1,
	}
	if d := Diff(want, res.Series); len(d) > 0 {
		t.Errorf("count differs:\n%s", strings.Join(d, "\n"))
	}
	if res.Missing != 1 {
		t.Errorf("missing = %d, want 1 (the delivered event z is not in the log)", res.Missing)
	}
	all, err := Count(path, nil, NodeAgents)
	if err != nil {
		t.Fatal(err)
	}
	if got := all.Series["herd_requests_total{client=kubelet,code=200,role=kubelet,verb=get}"]; got != 1 {
		t.Errorf("without a delivered set every event counts: get = %g, want 1", got)
	}
	withRevision := Series{"herd_too_large_resource_version_total{client=kubelet,detected_by=revision,resource=pods,role=kubelet}": 2,
		"herd_too_large_resource_version_total{client=kubelet,detected_by=status,resource=pods,role=kubelet}": 1}
	if w := withRevision.Without("herd_too_large_resource_version_total", "detected_by", "revision"); len(w) != 1 || w["herd_too_large_resource_version_total{client=kubelet,detected_by=status,resource=pods,role=kubelet}"] != 1 {
		t.Errorf("Without = %v", w)
	}
	if d := Diff(Series{"x{}": 1}, Series{"y{}": 2}); !slices.Equal(d, []string{"x{}: independent count 1, herd 0", "y{}: independent count 0, herd 2"}) {
		t.Errorf("Diff = %q", d)
	}
}

// TestFutureRevisions pins the bounds on requests above the cluster's
// revision: certainly too large when above a revision read after they were
// served, possibly when above the lowest revision from before them until
// herd could judge them — a restore in that span included.
func TestFutureRevisions(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	at := func(s float64) string {
		return t0.Add(time.Duration(s * float64(time.Second))).Format("2006-01-02T15:04:05.000000Z07:00")
	}
	event := func(id, uri, user string, code int, s float64) string {
		return `{"auditID":"` + id + `","stage":"ResponseStarted","verb":"watch","requestURI":"` + uri + `","user":{"username":"` + user + `"},` +
			`"objectRef":{"resource":"pods"},"responseStatus":{"code":` + strconv.Itoa(code) + `},` +
			`"requestReceivedTimestamp":"` + at(s) + `","stageTimestamp":"` + at(s+0.01) + `"}`
	}
	lines := []string{
		event("a", "/api/v1/pods?resourceVersion=70&watch=true", "system:node:n1", 200, 1),   // below: fine
		event("b", "/api/v1/pods?resourceVersion=150&watch=true", "system:node:n1", 200, 11), // above the restored 100 and the next read's 105: certain
		event("c", "/api/v1/pods?resourceVersion=1000&watch=true", "system:node:n2", 200, 2), // above everything: certain
		event("d", "/api/v1/pods?resourceVersion=190&watch=true", "system:node:n2", 200, 9),  // before the restore, below the read after it: possible (judged after the restore)
		event("e", "/api/v1/pods?resourceVersion=0&watch=true", "system:node:n2", 200, 12),   // any revision
		event("f", "/api/v1/pods?resourceVersion=150&watch=true", "system:node:n2", 403, 12), // refused
		event("g", "/api/v1/pods?resourceVersion=103&watch=true", "system:node:n1", 200, 11), // above the restored 100 only: possible
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	revs := &Revisions{}
	for _, s := range []struct {
		at  float64
		rev uint64
	}{{0, 80}, {0.5, 85}, {1.5, 95}, {3, 120}, {9.5, 200}, {12, 105}, {13, 110}} {
		revs.samples = append(revs.samples, revisionSample{t0.Add(time.Duration(s.at * float64(time.Second))), s.rev})
	}
	revs.Restored(t0.Add(10*time.Second), t0.Add(11*time.Second), 100)
	res, err := FutureRevisions(path, nil, NodeAgents, revs, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Bounds{"system:node:n1": {Definite: 1, Possible: 2}, "system:node:n2": {Definite: 1, Possible: 2}}
	if len(res.ByIdentity) != len(want) || res.ByIdentity["system:node:n1"] != want["system:node:n1"] || res.ByIdentity["system:node:n2"] != want["system:node:n2"] {
		t.Errorf("by identity %+v, want %+v", res.ByIdentity, want)
	}
	if b := res.BySeries["herd_too_large_resource_version_total{client=kubelet,detected_by=revision,resource=pods,role=kubelet}"]; b != (Bounds{2, 4}) {
		t.Errorf("by series %+v, want 2..4 on pods", res.BySeries)
	}
}

// TestDiff: a key on one side only counts as the zero value on the other;
// equal values are not listed; the lines are sorted.
func TestDiff(t *testing.T) {
	got := Diff(Series{"a": 1, "b": 2, "z": 0}, Series{"b": 3, "c": 4, "y": 0})
	want := []string{"b: independent count 2, herd 3", "c: independent count 0, herd 4", "a: independent count 1, herd 0"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Diff = %q, want %q", got, want)
	}
	if d := DiffFormat(map[string]int{"x": 1}, map[string]int{"x": 1}, "%s %v %v"); d != nil {
		t.Errorf("equal maps: %q", d)
	}
}
