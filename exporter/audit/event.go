// Package audit turns kube-apiserver audit events into the few facts herd
// accounts. It never builds the full audit.k8s.io/v1 object: on the hot path an
// Event is a view into the request body, valid only for the duration of the
// callback that receives it, so decoding a 400-event batch allocates almost
// nothing.
package audit

// Stage is the audit stage of an event. Only the stages herd counts matter;
// everything else decodes as StageOther.
type Stage uint8

const (
	StageOther Stage = iota
	StageRequestReceived
	StageResponseStarted
	StageResponseComplete
	StagePanic
)

func (s Stage) String() string {
	switch s {
	case StageRequestReceived:
		return "RequestReceived"
	case StageResponseStarted:
		return "ResponseStarted"
	case StageResponseComplete:
		return "ResponseComplete"
	case StagePanic:
		return "Panic"
	}
	return "Other"
}

// Event is the subset of an audit.k8s.io/v1 Event that herd needs.
//
// The []byte fields alias the decoder's buffers: they are valid only until the
// callback that received the Event returns. Copy (string(b)) what must outlive it.
type Event struct {
	AuditID   []byte
	Stage     Stage
	Verb      []byte // get, list, watch, create, ...
	User      []byte // user.username
	UserAgent []byte
	// SourceIP is sourceIPs[0]: X-Forwarded-For's first hop when the client
	// sent one, so the client chooses it. It labels and enriches; it never
	// decides (SPEC §3.1 "What herd trusts"). Use PeerIP, or TrustedSourceIP
	// with the configured trusted proxies, for anything that decides.
	SourceIP []byte
	// SourceIPTail holds the last NumSourceIPTail entries of sourceIPs, in
	// their order; the last is the address of the connection the apiserver
	// served (k8s.io/apimachinery/pkg/util/net/http.go SourceIPs appends
	// the remote address unless it already ends the X-Forwarded-For chain).
	// Entries before it come from X-Forwarded-For / X-Real-Ip.
	SourceIPTail    [MaxSourceIPTail][]byte
	NumSourceIPTail int

	// Groups facts, from user.groups.
	// Unauthenticated is set for system:anonymous, an empty username, or
	// membership of system:unauthenticated: such a request never joins a
	// node-side role.
	Unauthenticated bool
	// NodeNameExtra is user.extra["authentication.kubernetes.io/node-name"][0]:
	// the node a pod-bound service-account token was issued for (GA in 1.32).
	// The apiserver vouches for it; the client cannot forge it.
	NodeNameExtra []byte

	// objectRef
	Resource    []byte
	Subresource []byte
	APIGroup    []byte
	Namespace   []byte
	Name        []byte

	Code int32 // responseStatus.code; 0 when absent
	// TooLargeResourceVersion is set when responseStatus says "Too large resource version"
	// (the 504 a watch cache answers while it waits for an RV it will never reach).
	TooLargeResourceVersion bool

	// StageTimestampNanos is stageTimestamp as Unix nanoseconds; 0 when absent or unparseable.
	StageTimestampNanos int64

	// Facts parsed from requestURI's query.
	Query Query

	// Latency is the apiserver's own per-phase latency of a slow request,
	// from the apiserver.latency.k8s.io/* annotations, in nanoseconds; 0
	// when the annotation is absent (the apiserver writes them only for
	// requests slower than its threshold).
	Latency [NumLatencyPhases]int64
}

// MaxSourceIPTail is how many trailing sourceIPs entries an Event keeps:
// the connection's address and up to three proxies in front of it.
const MaxSourceIPTail = 4

// PeerIP is the last entry of sourceIPs: the address of the connection the
// apiserver served, which the client cannot choose. nil when absent.
func (e *Event) PeerIP() []byte {
	if e.NumSourceIPTail == 0 {
		return nil
	}
	return e.SourceIPTail[e.NumSourceIPTail-1]
}

// LatencyPhase is one apiserver.latency.k8s.io/* annotation.
type LatencyPhase uint8

// The phases herd counts (names as the annotation suffixes).
const (
	LatencyTotal LatencyPhase = iota
	LatencyEtcd
	LatencyAPFQueueWait
	LatencySerializeResponse
	LatencyTransformResponse
	LatencyResponseWrite
	NumLatencyPhases
)

// Query holds the request parameters that decide what kind of read a request is.
type Query struct {
	// ResourceVersion is the resourceVersion parameter as sent ("" when absent).
	ResourceVersion []byte
	// ResourceVersionMatch is "", "NotOlderThan" or "Exact".
	ResourceVersionMatch []byte
	// Continue is true when a continue token was sent: a later page, not a relist.
	Continue bool
	// SendInitialEvents is true for a streaming (WatchList) relist.
	SendInitialEvents bool
	// Limit is the page size asked for; 0 when absent.
	Limit int64
	// FieldSelectorNode is the node name from a spec.nodeName= (or, for nodes,
	// metadata.name=) field selector; empty when there is none.
	FieldSelectorNode []byte
	// FieldSelectorName is the object name from a metadata.name= field
	// selector (the kubelet's per-object ConfigMap and Secret reflectors);
	// empty when there is none.
	FieldSelectorName []byte
	// OtherFieldSelector is set when a field selector has a term other than
	// spec.nodeName= and metadata.name=; LabelSelector when a labelSelector
	// was sent. Together they tell a relist's shape (accounting.Shape).
	OtherFieldSelector bool
	LabelSelector      bool
}
