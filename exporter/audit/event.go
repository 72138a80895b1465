// Package audit turns kube-apiserver audit events into the few facts herd
// accounts. It never builds the full audit.k8s.io/v1 object: on the hot path an
// Event is a view into the request body, valid only for the duration of the
// callback that receives it, so decoding a 400-event batch allocates almost
// nothing.
package audit

import "encoding/binary"

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
	// SourceIPTail holds the last NumSourceIPTail (≤ MaxSourceIPTail)
	// entries of sourceIPs, in their order; the last is the address of the
	// connection the apiserver served. k8s.io/apimachinery@v0.36.3
	// pkg/util/net/http.go SourceIPs builds the list as: every parseable
	// X-Forwarded-For entry, then X-Real-Ip unless already in that chain,
	// then the request's RemoteAddr unless it equals the last entry so far
	// ("Always include the request Remote Address as it cannot be easily
	// spoofed"). So the last entry is the peer, except in the one case where
	// the client's own X-Forwarded-For (or X-Real-Ip) already ended with the
	// peer's address, which then names the same address anyway. Entries
	// before it come from X-Forwarded-For / X-Real-Ip and are the client's
	// word unless a proxy the operator trusts wrote them.
	SourceIPTail    [MaxSourceIPTail][]byte
	NumSourceIPTail int

	// Unauthenticated is set for user.username system:anonymous, an empty
	// or absent username, or a user.groups entry system:unauthenticated:
	// such a request never joins a node-side role.
	Unauthenticated bool
	// NodeNameExtra is user.extra["authentication.kubernetes.io/node-name"][0]:
	// the node a pod-bound service-account token was issued for (the key is
	// NodeNameKey in k8s.io/apiserver@v0.36.3
	// pkg/authentication/serviceaccount/util.go). k8s.io/kubernetes@v1.36.3
	// pkg/registry/core/serviceaccount/storage/token.go writes the node
	// claim into a TokenRequest bound to a scheduled Pod (feature
	// ServiceAccountTokenPodNodeInfo), even when the Node object does not
	// exist; pkg/serviceaccount/claims.go copies it to user.extra and, for a
	// pod-bound token, checks only that the Pod still exists, not the Node:
	// a pod-bound token of a deleted Node keeps authenticating with the
	// deleted Node's name (a ghost). The apiserver signed it; the client
	// cannot forge it. nil when absent.
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
	// RequestReceived is requestReceivedTimestamp as written (nil when
	// absent); RequestReceivedNanos parses it. Every stage of one request
	// carries the same value and the apiserver, not the client, sets it
	// (microsecond precision), so with the auditID it tells a re-sent event
	// from another request that reuses the Audit-ID header (RequestKey). It
	// is kept raw because the hot path only hashes it.
	RequestReceived []byte

	// Facts parsed from requestURI's query.
	Query Query

	// Latency is the apiserver's own per-phase latency of a slow request,
	// from the apiserver.latency.k8s.io/* annotations, in nanoseconds; 0
	// when the annotation is absent. See LatencyPhase for when the
	// apiserver writes them.
	Latency [NumLatencyPhases]int64
}

// RequestReceivedNanos is RequestReceived as Unix nanoseconds; 0 when
// absent or unparseable.
func (e *Event) RequestReceivedNanos() int64 { return parseTimestamp(e.RequestReceived) }

// RequestKey is what tells one request from another that reuses its
// auditID: a hash of requestReceivedTimestamp as written, or of
// stageTimestamp for events that lack it (audit.k8s.io/v1beta1 before 1.8,
// reconstructed GKE entries). 0 when the event has neither. Every stage and
// every re-send of one request has the same key.
func (e *Event) RequestKey() uint64 {
	if len(e.RequestReceived) > 0 {
		return hashBytes(e.RequestReceived) | 1
	}
	if e.StageTimestampNanos != 0 {
		return uint64(e.StageTimestampNanos)*0x9e3779b97f4a7c15 | 1
	}
	return 0
}

// hashBytes hashes b a word at a time (timestamps are ~27 bytes): cheaper
// than parsing them, and all a key needs.
func hashBytes(b []byte) uint64 {
	h := uint64(len(b)) * 0x9e3779b97f4a7c15
	for len(b) >= 8 {
		h = (h ^ binary.LittleEndian.Uint64(b)) * 0xff51afd7ed558ccd
		h ^= h >> 32
		b = b[8:]
	}
	var tail uint64
	for i, c := range b {
		tail |= uint64(c) << (8 * i)
	}
	h = (h ^ tail) * 0xc4ceb9fe1a85ec53
	return h ^ h>>29
}

// Mix64 is the murmur3 finalizer: every input bit moves every output bit.
// The ledger and dedup finish their hashes of an event's keys with it.
func Mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
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
//
// What the apiserver writes (k8s.io/apiserver@v0.36.3): the filter in
// pkg/endpoints/filters/audit.go (writeLatencyToAnnotation) adds them only
// at the ResponseComplete stage, only when the request took more than
// 500ms from requestReceivedTimestamp, and only the phases whose tracker is
// not zero (pkg/endpoints/request/webhook_duration.go,
// AuditAnnotationsFromLatencyTrackers), plus "total". Each value is a Go
// time.Duration.String() ("512.3ms", "1.204s", "1m2.5s", "850µs"). The etcd
// phase is time spent in etcd KV calls (pkg/storage/etcd3/latency_tracker.go):
// a LIST served from the watch cache has none, or only the consistent
// read's revision check.
type LatencyPhase uint8

// The phases, one per annotation key (the suffix after
// apiserver.latency.k8s.io/ is in LatencyPhase.String).
const (
	LatencyTotal             LatencyPhase = iota // total
	LatencyEtcd                                  // etcd
	LatencyAPFQueueWait                          // apf-queue-wait
	LatencySerializeResponse                     // serialize-response-object
	LatencyTransformResponse                     // transform-response-object
	LatencyResponseWrite                         // response-write
	LatencyDecodeResponse                        // decode-response-object
	LatencyMutatingWebhook                       // mutating-webhook
	LatencyValidatingWebhook                     // validating-webhook
	LatencyAuthentication                        // authentication
	LatencyAuthorization                         // authorization
	LatencyImpersonation                         // impersonation
	NumLatencyPhases
)

// LatencyAnnotationPrefix starts every latency annotation key.
const LatencyAnnotationPrefix = "apiserver.latency.k8s.io/"

var latencyPhaseNames = [NumLatencyPhases]string{
	"total", "etcd", "apf-queue-wait", "serialize-response-object", "transform-response-object",
	"response-write", "decode-response-object", "mutating-webhook", "validating-webhook",
	"authentication", "authorization", "impersonation",
}

// String is the annotation key's suffix, also herd's label value.
func (p LatencyPhase) String() string {
	if p < NumLatencyPhases {
		return latencyPhaseNames[p]
	}
	return "unknown"
}

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
	// FieldSelectorName is the object name from a metadata.name= (or ==)
	// field selector on any resource but nodes (the kubelet's per-object
	// ConfigMap and Secret reflectors, a CNI agent's own CiliumNode); empty
	// when there is none. On nodes that term is FieldSelectorNode instead.
	FieldSelectorName []byte
	// OtherFieldSelector is set when a field selector has a term other than
	// a non-empty spec.nodeName= / metadata.name= equality (spec.nodeName=
	// with no value, a != term, status.phase=...); LabelSelector when a
	// non-empty labelSelector was sent. Together they tell a relist's shape
	// (accounting.Shape).
	OtherFieldSelector bool
	LabelSelector      bool
	// Unknown is set when the event was rebuilt from a provider's record
	// that does not keep the request's query string (a GKE LogEntry without
	// a logged request): every field above is then empty because it is
	// unknown, not because the client sent nothing, so whether a LIST was a
	// page, a WatchList or served from cache cannot be told.
	Unknown bool
}
