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
	SourceIP  []byte // sourceIPs[0]; the apiserver puts X-Forwarded-For's first hop here

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
}
