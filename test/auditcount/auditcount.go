// Package auditcount checks herd's books against an independent count over
// the kube-apiserver's own audit log of the same run.
//
// The apiserver writes every audit event twice: to its log backend (a JSON
// line per event, --audit-log-path) and, in batches, to its webhook backend.
// A Tee sits on the webhook between the apiserver and herd's /audit handler
// and records which events herd answered 200 for — the events herd accounted.
// Count then reads those same events from the log file, decoded with the
// apiserver's own audit/v1 types, and counts them by the rules docs/exporter.md
// states ("What herd counts"; SPEC §3.3), written here from scratch: none of
// herd's decoder, classifier or ledger is used, so a bug there shows up as a
// difference rather than being repeated on both sides.
//
// The webhook can lose a batch in flight (at an apiserver restart, say) that
// the log keeps: counting only what herd was delivered keeps such a loss from
// looking like an accounting error. Whether a loss matters is the caller's
// question (compare Count with and without the delivered set).
package auditcount

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/test/controlplane"
)

// Key names one audit event of one request: its auditID and stage. Each
// stage of a request is a separate event.
type Key struct {
	AuditID string
	Stage   auditv1.Stage
}

// Tee is the apiserver's audit webhook endpoint in a test: an https server
// (the apiserver sends its bearer token only over https) that hands each
// batch to herd's /audit handler unchanged and remembers the events of every
// batch herd answered 200.
type Tee struct {
	srv   *httptest.Server
	token string

	mu        sync.Mutex // held while a batch is forwarded, and by Snapshot
	next      http.Handler
	delivered map[Key]bool
	refused   int
}

// NewTee starts a tee that accepts only the given bearer token. Until
// Forward is called it answers 503 (the apiserver retries). Close it when
// done.
func NewTee(token string) *Tee {
	t := &Tee{token: token, delivered: map[Key]bool{}}
	t.srv = httptest.NewTLSServer(http.HandlerFunc(t.serve))
	return t
}

// Wire points opts' audit webhook at the tee, with its token and CA.
func (t *Tee) Wire(opts *controlplane.Options) { controlplane.WireAuditWebhook(opts, t.srv, t.token) }

// Forward sends batches to h from now on (herd's exporter.AuditHandler).
func (t *Tee) Forward(h http.Handler) {
	t.mu.Lock()
	t.next = h
	t.mu.Unlock()
}

// Close stops the server.
func (t *Tee) Close() { t.srv.Close() }

// Refused is how many batches herd did not answer 200 (the apiserver
// re-sends them).
func (t *Tee) Refused() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refused
}

func (t *Tee) serve(w http.ResponseWriter, r *http.Request) {
	body, list, ok := controlplane.ReadAuditBatch(w, r, t.token)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next == nil {
		http.Error(w, "tee: nothing to forward to yet", http.StatusServiceUnavailable)
		return
	}
	fwd := r.Clone(r.Context())
	fwd.Body = io.NopCloser(bytes.NewReader(body))
	fwd.ContentLength = int64(len(body))
	// herd serves audit batches on /audit only, whatever path the
	// apiserver's webhook posted to the tee.
	fwd.URL.Path, fwd.RequestURI = "/audit", "/audit"
	rec := httptest.NewRecorder()
	t.next.ServeHTTP(rec, fwd)
	if rec.Code == http.StatusOK {
		for i := range list.Items {
			t.delivered[Key{string(list.Items[i].AuditID), list.Items[i].Stage}] = true
		}
	} else {
		t.refused++
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// Snapshot runs read while no batch is being forwarded, so that what read
// takes from herd (its metrics) and the delivered set it returns describe the
// same events.
func (t *Tee) Snapshot(read func()) map[Key]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	read()
	out := make(map[Key]bool, len(t.delivered))
	for k := range t.delivered {
		out[k] = true
	}
	return out
}

// Series are samples keyed "name{label=value,...}", labels sorted by name.
type Series map[string]float64

func (s Series) add(name string, v float64, labels ...string) {
	pairs := make([]string, 0, len(labels)/2)
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, labels[i]+"="+labels[i+1])
	}
	sort.Strings(pairs)
	s[name+"{"+strings.Join(pairs, ",")+"}"] += v
}

// String lists the series, one a line, sorted.
func (s Series) String() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(s)) {
		fmt.Fprintf(&b, "%s %g\n", k, s[k])
	}
	return b.String()
}

// Without is s minus the series of family name that have label=value.
func (s Series) Without(name, label, value string) Series {
	out := Series{}
	for k, v := range s {
		if strings.HasPrefix(k, name+"{") && slices.Contains(strings.Split(strings.TrimSuffix(k[len(name)+1:], "}"), ","), label+"="+value) {
			continue
		}
		out[k] = v
	}
	return out
}

// Diff lists every series whose value differs between want and got
// (absent counts as 0), sorted.
func Diff(want, got Series) []string {
	return DiffFormat(want, got, "%s: independent count %g, herd %g")
}

// DiffFormat lists, sorted, format applied to the key, a's value and b's
// value of every key whose value differs between a and b (an absent key
// has the zero value).
func DiffFormat[V comparable](a, b map[string]V, format string) []string {
	var out []string
	for k := range a {
		if a[k] != b[k] {
			out = append(out, fmt.Sprintf(format, k, a[k], b[k]))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && a[k] != b[k] {
			out = append(out, fmt.Sprintf(format, k, a[k], b[k]))
		}
	}
	sort.Strings(out)
	return out
}

// Families are the counters Count produces, as herd names them.
var Families = []string{
	"herd_requests_total",
	"herd_relists_total",
	"herd_list_pages_total",
	"herd_too_large_resource_version_total",
	"herd_tokenreviews_total",
}

// Gather reads the counters of Families from herd's registry.
func Gather(g prometheus.Gatherer) (Series, error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, f := range Families {
		want[f] = true
	}
	s := Series{}
	for _, mf := range mfs {
		if !want[mf.GetName()] || mf.GetType() != dto.MetricType_COUNTER {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName(), lp.GetValue())
			}
			s.add(mf.GetName(), m.GetCounter().GetValue(), labels...)
		}
	}
	return s, nil
}

// Classifier says which role and client made a request, by identity. Count
// needs it only for the identities of the run's agents.
type Classifier func(username, userAgent string) (role, client string)

// NodeAgents classifies the real agents' identities: kubelets by their
// system:node:NAME username, kube-proxy by its service account; everything
// else is other/other.
func NodeAgents(username, _ string) (role, client string) {
	switch {
	case strings.HasPrefix(username, "system:node:") && len(username) > len("system:node:"):
		return "kubelet", "kubelet"
	case username == "system:serviceaccount:kube-system:kube-proxy":
		return "kube-proxy", "kube-proxy"
	}
	return "other", "other"
}

// Counted reports whether e is the event that counts for its request: a
// watch counts at ResponseStarted, anything else at ResponseComplete.
func Counted(e *auditv1.Event) bool {
	if e.Verb == "watch" {
		return e.Stage == auditv1.StageResponseStarted
	}
	return e.Stage == auditv1.StageResponseComplete
}

// Result is an independent count.
type Result struct {
	Series Series
	// Missing is how many delivered events the log does not (yet) hold.
	Missing int
}

// Count reads the audit log at path and counts the delivered events (every
// event when delivered is nil) that count for their request.
func Count(path string, delivered map[Key]bool, classify Classifier) (Result, error) {
	res := Result{Series: Series{}}
	c := counter{s: res.Series, classify: classify, proven: map[string]bool{}}
	found := 0
	err := Each(path, func(e *auditv1.Event) {
		if delivered != nil {
			if !delivered[Key{string(e.AuditID), e.Stage}] {
				return
			}
			found++
		}
		if !Counted(e) {
			return
		}
		c.event(e)
	})
	if err != nil {
		return res, err
	}
	if delivered != nil {
		res.Missing = len(delivered) - found
	}
	return res, nil
}

// Each decodes every line of the audit log at path.
func Each(path string, f func(*auditv1.Event)) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		var e auditv1.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
		f(&e)
	}
	return sc.Err()
}

// counter counts events in log order: a resource name is a label value only
// once an answer proved the resource real, so the order matters.
type counter struct {
	s        Series
	classify Classifier
	proven   map[string]bool
}

// The label rules of docs/exporter.md ("What herd trusts", "What herd
// counts"), written from the docs.
var (
	knownVerbs = map[string]bool{"get": true, "list": true, "watch": true, "create": true, "update": true, "patch": true,
		"delete": true, "deletecollection": true, "proxy": true, "post": true, "put": true, "head": true, "options": true}
	// indexedByNode are the resources whose spec.nodeName selector the watch
	// cache serves from an index: <resource>.<group>, core without group.
	indexedByNode = map[string]bool{"pods": true, "resourceslices.resource.k8s.io": true}
)

func (c *counter) event(e *auditv1.Event) {
	role, client := c.classify(e.User.Username, e.UserAgent)
	if unauthenticated(e) {
		role, client = "other", "unauthenticated"
	}
	code := 0
	message := ""
	if e.ResponseStatus != nil {
		code = int(e.ResponseStatus.Code)
		message = e.ResponseStatus.Message
	}
	codeLabel, verb := fmt.Sprint(code), e.Verb
	if http.StatusText(code) == "" {
		codeLabel = "other"
	}
	if !knownVerbs[verb] {
		verb = "other"
	}
	c.s.add("herd_requests_total", 1, "role", role, "client", client, "verb", verb, "code", codeLabel)
	if code == http.StatusUnauthorized || code == http.StatusForbidden {
		return // refused: a request, nothing else
	}

	resource := ""
	if e.ObjectRef != nil {
		resource = e.ObjectRef.Resource
		if e.ObjectRef.APIGroup != "" && resource != "" {
			resource += "." + e.ObjectRef.APIGroup
		}
	}
	tooLarge := strings.Contains(message, "Too large resource version")
	if resource != "" && (code >= 200 && code < 300 || tooLarge) {
		c.proven[resource] = true
	}
	if resource != "" && !c.proven[resource] {
		resource = "other"
	}
	q := Query(e.RequestURI)
	switch {
	case e.Verb == "list" && q.Get("continue") != "":
		c.s.add("herd_list_pages_total", 1, "role", role, "client", client, "resource", resource)
	case e.Verb == "list" || (e.Verb == "watch" && q.Get("sendInitialEvents") == "true"):
		c.s.add("herd_relists_total", 1, "role", role, "client", client, "resource", resource, "consistency", Consistency(q), "shape", Shape(resource, q))
	}
	if tooLarge {
		// The apiserver said so. Requests answered otherwise but above the
		// cluster's revision (detected_by="revision") need the revision:
		// FutureRevisions bounds them.
		c.s.add("herd_too_large_resource_version_total", 1, "role", role, "client", client, "resource", resource, "detected_by", "status")
	}
	if e.Verb == "create" && e.ObjectRef != nil && e.ObjectRef.Resource == "tokenreviews" && e.ObjectRef.APIGroup == "authentication.k8s.io" {
		c.s.add("herd_tokenreviews_total", 1, "role", role, "client", client)
	}
}

// unauthenticated: a request without credentials (system:anonymous, an
// empty username, or the system:unauthenticated group).
func unauthenticated(e *auditv1.Event) bool {
	if e.User.Username == "" || e.User.Username == "system:anonymous" {
		return true
	}
	for _, g := range e.User.Groups {
		if g == "system:unauthenticated" {
			return true
		}
	}
	return false
}

// Shape is what a read of resource (<resource>[.<group>]) selects: object
// (a metadata.name= term, or on nodes the node's own), node (spec.nodeName=
// on an indexed resource), selected (any other field or label selector) or
// all.
func Shape(resource string, q url.Values) string {
	var node, name, other bool
	for _, term := range strings.Split(q.Get("fieldSelector"), ",") {
		field, value, _ := strings.Cut(term, "=")
		value = strings.TrimPrefix(value, "=")
		switch {
		case term == "":
		case field == "metadata.name" && value != "":
			name = true
		case field == "spec.nodeName" && value != "":
			node = true
		default:
			other = true
		}
	}
	switch {
	case name:
		return "object"
	case node && indexedByNode[resource]:
		return "node"
	case node || other || q.Get("labelSelector") != "":
		return "selected"
	}
	return "all"
}

// Query parses a requestURI's query ("" values for a URI that does not parse).
func Query(requestURI string) url.Values {
	u, err := url.ParseRequestURI(requestURI)
	if err != nil {
		return url.Values{}
	}
	return u.Query()
}

// Consistency is how a read is served: exact (resourceVersionMatch=Exact),
// consistent (no resourceVersion: the newest state) or cache (any other
// resourceVersion, "0" above all).
func Consistency(q url.Values) string {
	switch {
	case q.Get("resourceVersionMatch") == "Exact":
		return "exact"
	case q.Get("resourceVersion") == "":
		return "consistent"
	}
	return "cache"
}
