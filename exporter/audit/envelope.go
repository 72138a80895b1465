package audit

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/valyala/fastjson"
)

// Managed clusters do not let the apiserver's webhook point at herd: their
// audit events arrive through the provider's logging pipeline, wrapped in
// its envelope. This file recognises those envelopes by their content (a
// top-level object, or an element of a top-level array, that has none of an
// event's auditID, stage, verb or kind) and unwraps them. Everything here is
// a cold path: it runs only for such objects, never for the apiserver's own
// EventList or bare events, and it may allocate. What each mapping keeps
// and loses is in docs/exporter.md ("Managed clusters").
//
// Nested payloads (a Firehose record holding a gzip'd CloudWatch message
// holding events) are decoded by the same Decoder, at most maxNest levels
// deep, and every decompression counts against one budget per call
// (MaxInflatedBytes), so a gzip bomb costs at most that much memory and time.

// ErrUnrecognized marks a top-level object (or array element) that is
// neither an audit event nor an envelope herd knows. It is counted apart
// from malformed events: the sender is misconfigured, not the apiserver.
var ErrUnrecognized = errors.New("unrecognised audit envelope")

// ErrInflateLimit marks a compressed payload that decompresses to more than
// the decoder's MaxInflatedBytes (errors.Is ErrOversized too).
var ErrInflateLimit = fmt.Errorf("%w: decompressed payload too large", ErrOversized)

// DefaultMaxInflatedBytes bounds what one DecodeBody call decompresses in
// all: the body limit of SPEC §3.1 (16 MiB), applied after decompression.
const DefaultMaxInflatedBytes = 16 << 20

// maxNest bounds envelopes inside envelopes (Firehose → CloudWatch →
// events is two).
const maxNest = 4

// GzipMagic starts every gzip stream (RFC 1952).
var GzipMagic = []byte{0x1f, 0x8b}

// Inflate decompresses the gzip stream src (all its members) into a new
// buffer of at most limit bytes. It returns ErrInflateLimit (with what it
// read so far discarded) when the output would exceed limit. The stream's
// own size trailer (ISIZE) sizes the buffer and refuses a bomb before any
// work; a trailer that lies low only costs growth, up to limit.
func Inflate(src []byte, limit int64) ([]byte, error) {
	hint := int64(64 << 10)
	if len(src) >= 18 {
		// ISIZE is the last member's size mod 2^32, so the whole output is
		// at least ISIZE: a trailer over the limit is refused unread.
		isize := int64(binary.LittleEndian.Uint32(src[len(src)-4:]))
		if isize > limit {
			return nil, ErrInflateLimit
		}
		hint = max(isize, 512) + 1
	}
	zr, err := gzip.NewReader(bytes.NewReader(src))
	if err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	out := make([]byte, 0, hint)
	for {
		if len(out) == cap(out) {
			if int64(len(out)) > limit {
				return nil, ErrInflateLimit
			}
			nb := make([]byte, len(out), min(int64(cap(out))*2, limit+1))
			copy(nb, out)
			out = nb
		}
		n, err := zr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if int64(len(out)) > limit {
			return nil, ErrInflateLimit
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
	}
}

// hasEventKeys says whether a walked object has any key that makes it an
// audit event (or an EventList or records wrapper) rather than an envelope.
// An empty object counts as an event missing its auditID, as it always did.
func (ev *rawEvent) hasEventKeys(obj []byte) bool {
	return ev.seen&(fKind|fAuditID|fStage|fVerb|fItems|fRecords) != 0 || skipWS(obj, 1) == len(obj)-1
}

// envParser returns a fastjson parser for the current nesting level: each
// level keeps its own, because the values of an outer envelope are still
// in use while an inner one is parsed.
func (d *Decoder) envParser(size int) *fastjson.Parser {
	if size > reuseLimit || d.nest >= maxNest {
		return new(fastjson.Parser)
	}
	return &d.pp[d.nest]
}

// envelope handles obj, a validated top-level object (or element of a
// top-level array) without an event's keys: it unwraps a known envelope and
// decodes what it holds, or counts it unrecognised, naming what it saw.
func (d *Decoder) envelope(obj []byte, at loc, fn func(*Event)) {
	v, err := d.envParser(len(obj)).ParseBytes(obj)
	if err != nil { // cannot happen: obj was validated
		d.skip(at, ErrMalformed, err.Error(), 0)
		return
	}
	o, _ := v.Object()
	str := func(keys ...string) ([]byte, bool) {
		x := v.Get(keys...)
		if x == nil || x.Type() != fastjson.TypeString {
			return nil, false
		}
		b, _ := x.StringBytes()
		return b, true
	}
	arr := func(key string) ([]*fastjson.Value, bool) {
		x := v.Get(key)
		if x == nil || x.Type() != fastjson.TypeArray {
			return nil, false
		}
		a, _ := x.Array()
		return a, true
	}
	switch {
	case o.Get("logEvents") != nil && o.Get("messageType") != nil:
		d.cloudWatch(v, at, fn)
	case v.Get("awslogs", "data") != nil:
		data, ok := str("awslogs", "data")
		if !ok {
			d.skip(at, ErrMalformed, "awslogs.data is not a string", 0)
			return
		}
		d.base64Payload(data, at, "awslogs.data", fn)
	case o.Get("protoPayload") != nil:
		d.logEntry(v, at, fn)
	case v.Get("message", "data") != nil && o.Get("subscription") != nil:
		// A Pub/Sub push delivery: message.data is the LogEntry, base64.
		data, ok := str("message", "data")
		if !ok {
			d.skip(at, ErrMalformed, "message.data is not a string", 0)
			return
		}
		d.base64Payload(data, at, "message.data", fn)
	case o.Get("entries") != nil:
		// The Cloud Logging API's entries.list answer.
		entries, ok := arr("entries")
		if !ok {
			d.skip(at, ErrMalformed, "entries is not an array", 0)
			return
		}
		for i, e := range entries {
			d.logEntry(e, loc{w: whereNamed, name: "entries[" + itoa(i) + "]"}, fn)
		}
	case o.Get("events") != nil && isLogEvents(v.Get("events")):
		// `aws logs filter-log-events` / `get-log-events` output.
		events, _ := arr("events")
		for i, e := range events {
			d.logEvent(e, "events["+itoa(i)+"]", fn)
		}
	case v.Get("properties", "log") != nil || o.Get("category") != nil && o.Get("properties") != nil:
		// An AKS diagnostic record on its own: a storage account's
		// PT1H.json has one per line.
		d.deliverRecord(obj, at, fn)
	case o.Get("log_s") != nil:
		// A Log Analytics AzureDiagnostics row: the event is in log_s.
		s, ok := str("log_s")
		if !ok {
			d.skip(at, ErrMalformed, "log_s is not a string", 0)
			return
		}
		d.innerJSON(s, at, "log_s", fn)
	case o.Get("AuditId") != nil && o.Get("Verb") != nil:
		d.aksAuditRow(v, at, fn)
	default:
		d.unrecognized(o, at)
	}
}

func isLogEvents(v *fastjson.Value) bool {
	a, err := v.Array()
	if err != nil || len(a) == 0 {
		return err == nil
	}
	return a[0].Get("message") != nil
}

// unrecognized counts an object herd cannot read and says what it saw: its
// keys (sorted, at most 12) and, for the envelopes a misconfigured shipper
// sends most, what it is.
func (d *Decoder) unrecognized(o *fastjson.Object, at loc) {
	d.r.Unrecognized++
	if d.r.Problem != nil {
		return // only the first is described: a body of them costs no more
	}
	var keys []string
	o.Visit(func(k []byte, _ *fastjson.Value) { keys = append(keys, string(k)) })
	sort.Strings(keys)
	shown := keys
	if len(shown) > 12 {
		shown = append(shown[:12:12], "…")
	}
	var what string
	isStr := func(k string) bool { x := o.Get(k); return x != nil && x.Type() == fastjson.TypeString }
	switch {
	case o.Get("resourceLogs") != nil:
		what = "OTLP/JSON logs (export the audit log as JSON lines instead)"
	case isStr("log"):
		what = `a log shipper's record with the event as a string in "log" (Fluent Bit: parse it with a json parser)`
	case isStr("message"):
		what = `a log shipper's record with the event as a string in "message" (Vector: parse_json(.message))`
	case o.Get("logEvents") != nil:
		what = "a CloudWatch Logs message without messageType"
	}
	reason := "top-level object with keys [" + strings.Join(shown, " ") + "]: "
	if what != "" {
		reason += what + ": "
	}
	reason += "not an audit event, EventList or known wrapper"
	d.r.Problem = &EventError{Line: d.lineOf(at.b, at.off), Offset: d.base + int64(at.off), Where: at.describe(), Reason: reason, Err: ErrUnrecognized}
}

// cloudWatch decodes a CloudWatch Logs subscription message: each
// logEvents[].message is one audit event as the provider's log agent wrote
// it (EKS writes the apiserver's JSON line). CONTROL_MESSAGEs, which
// CloudWatch sends to check that a destination is reachable, hold no events
// and are counted skipped.
func (d *Decoder) cloudWatch(v *fastjson.Value, at loc, fn func(*Event)) {
	if mt := v.GetStringBytes("messageType"); string(mt) != "DATA_MESSAGE" {
		d.r.Skipped++
		return
	}
	events := v.GetArray("logEvents")
	for i, e := range events {
		d.logEvent(e, at.describe()+".logEvents["+itoa(i)+"]", fn)
	}
}

// logEvent decodes one CloudWatch log event ({"id","timestamp","message"}).
func (d *Decoder) logEvent(e *fastjson.Value, where string, fn func(*Event)) {
	m := e.Get("message")
	if m == nil || m.Type() != fastjson.TypeString {
		d.skip(loc{w: whereNamed, name: where}, ErrMalformed, "message is missing or not a string", 0)
		return
	}
	b, _ := m.StringBytes()
	d.innerJSON(b, loc{w: whereNamed, name: where}, "message", fn)
}

// base64Payload decodes a base64 field (Firehose record data, awslogs.data,
// Pub/Sub message.data), decompressing it when it is gzip, and decodes the
// result as a body.
func (d *Decoder) base64Payload(data []byte, at loc, field string, fn func(*Event)) {
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(data)))
	n, err := base64.StdEncoding.Decode(raw, data)
	if err != nil {
		d.skip(at, ErrMalformed, field+" is not base64: "+err.Error(), 0)
		return
	}
	d.innerJSON(raw[:n], at, field, fn)
}

// innerJSON decodes payload, the content of an envelope's field, as a body
// of its own (an event, JSON lines, or another envelope), decompressing it
// first when it starts with gzip's magic bytes.
func (d *Decoder) innerJSON(payload []byte, at loc, field string, fn func(*Event)) {
	if d.nest >= maxNest {
		d.skip(at, ErrMalformed, field+": envelopes nested deeper than "+itoa(maxNest)+" levels", 0)
		return
	}
	if bytes.HasPrefix(payload, GzipMagic) {
		p, err := d.inflate(payload)
		if err != nil {
			if errors.Is(err, ErrInflateLimit) {
				d.r.Oversized++
				d.setProblem(&EventError{Where: at.describe() + "." + field, Reason: fmt.Sprintf("decompresses to more than the %d-byte limit", d.inflateLeft()+int64(len(p))), Err: ErrOversized})
				return
			}
			d.skip(at, ErrMalformed, field+": "+err.Error(), 0)
			return
		}
		payload = p
	}
	if skipWS(payload, 0) == len(payload) {
		d.skip(at, ErrMalformed, field+" is empty", 0)
		return
	}
	// The inner payload is a body of its own: offsets restart at 0, and
	// problems name the field they are in.
	base, line := d.base, d.line
	d.nest++
	berr := d.decode(payload, 0, 0, fn)
	d.nest--
	d.base, d.line = base, line
	if berr != nil {
		d.r.Malformed++
		d.setProblem(&EventError{Where: at.describe() + "." + field, Reason: "not JSON: " + berr.Msg + " at offset " + strconv.FormatInt(berr.Offset, 10), Err: ErrMalformed})
	}
}

func (d *Decoder) maxInflated() int64 {
	if d.MaxInflatedBytes > 0 {
		return d.MaxInflatedBytes
	}
	return DefaultMaxInflatedBytes
}

func (d *Decoder) inflateLeft() int64 { return d.maxInflated() - d.inflated }

// inflate decompresses p within what is left of this call's budget.
func (d *Decoder) inflate(p []byte) ([]byte, error) {
	out, err := Inflate(p, d.inflateLeft())
	d.inflated += int64(len(out))
	return out, err
}

// synthEvent is an audit.k8s.io/v1 Event rebuilt from a provider's record
// (GKE LogEntry, AKSAudit row): marshalled, then decoded like any event, so
// every rule (query parsing, selectors, trust) applies unchanged.
type synthEvent struct {
	Kind                     string            `json:"kind"`
	APIVersion               string            `json:"apiVersion"`
	AuditID                  string            `json:"auditID"`
	Stage                    string            `json:"stage"`
	RequestURI               string            `json:"requestURI,omitempty"`
	Verb                     string            `json:"verb"`
	User                     synthUser         `json:"user"`
	SourceIPs                []string          `json:"sourceIPs,omitempty"`
	UserAgent                string            `json:"userAgent,omitempty"`
	ObjectRef                *synthRef         `json:"objectRef,omitempty"`
	ResponseStatus           *synthStatus      `json:"responseStatus,omitempty"`
	RequestReceivedTimestamp string            `json:"requestReceivedTimestamp,omitempty"`
	StageTimestamp           string            `json:"stageTimestamp,omitempty"`
	Annotations              map[string]string `json:"annotations,omitempty"`
}

type synthUser struct {
	Username string              `json:"username,omitempty"`
	Groups   []string            `json:"groups,omitempty"`
	Extra    map[string][]string `json:"extra,omitempty"`
}

type synthRef struct {
	Resource    string `json:"resource,omitempty"`
	Subresource string `json:"subresource,omitempty"`
	APIGroup    string `json:"apiGroup,omitempty"`
	Namespace   string `json:"namespace,omitempty"`
	Name        string `json:"name,omitempty"`
}

type synthStatus struct {
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// deliverSynth marshals s and decodes it as the event at `at`.
func (d *Decoder) deliverSynth(s *synthEvent, lost bool, at loc, fn func(*Event)) {
	b, err := json.Marshal(s)
	if err != nil {
		d.skip(at, ErrMalformed, err.Error(), 0)
		return
	}
	d.queryLost = lost
	base, line := d.base, d.line
	d.base, d.line = 0, 0
	d.walkEvent(b, 0, 0, false, at, fn)
	d.base, d.line = base, line
	d.queryLost = false
}

// logEntry rebuilds the audit event of a GKE Cloud Audit Logs LogEntry
// (protoPayload: google.cloud.audit.AuditLog, serviceName k8s.io). GKE keeps
// neither the request URI nor user.groups/extra, nor the HTTP code; what it
// keeps, and how herd rebuilds the rest, is docs/exporter.md's GKE table.
func (d *Decoder) logEntry(e *fastjson.Value, at loc, fn func(*Event)) {
	p := e.Get("protoPayload")
	if p == nil || p.Type() != fastjson.TypeObject {
		d.skip(at, ErrMalformed, "protoPayload is missing or not an object", 0)
		return
	}
	gs := func(v *fastjson.Value, keys ...string) string { return string(v.GetStringBytes(keys...)) }
	if svc := gs(p, "serviceName"); svc != "k8s.io" {
		// Cloud Audit Logs of other services (GKE's own container API)
		// share the sinks: not audit events of the apiserver.
		d.r.Skipped++
		return
	}
	method := gs(p, "methodName")
	id := gs(e, "operation", "id")
	if id == "" {
		id = gs(e, "insertId") // no operation: each entry is a request of its own
	}
	verb := method[strings.LastIndexByte(method, '.')+1:]
	if !strings.HasPrefix(method, "io.k8s.") || verb == "" {
		d.skip(at, ErrMalformed, "methodName "+strconv.Quote(method)+" is not io.k8s.<group>.<version>.<resource>.<verb>", 0)
		return
	}
	s := synthEvent{Kind: "Event", APIVersion: "audit.k8s.io/v1", AuditID: id, Verb: verb,
		StageTimestamp: gs(e, "timestamp"), UserAgent: gs(p, "requestMetadata", "callerSuppliedUserAgent")}
	// A watch is logged when it starts (operation.first) and when it ends
	// (operation.last); other requests once, both set.
	s.Stage = "ResponseComplete"
	if e.GetBool("operation", "first") && !e.GetBool("operation", "last") {
		s.Stage = "ResponseStarted"
	}
	s.User.Username = gs(p, "authenticationInfo", "principalEmail")
	if ip := gs(p, "requestMetadata", "callerIp"); ip != "" {
		// callerIp is one address, and GKE does not say whether it is the
		// connection's or X-Forwarded-For's first hop: it labels (SourceIP)
		// but is not kept as the peer address.
		s.SourceIPs = []string{ip}
	}
	s.ObjectRef = parseResourceName(gs(p, "resourceName"))
	code, msg := int(p.GetInt("status", "code")), gs(p, "status", "message")
	s.ResponseStatus = &synthStatus{Code: httpCodeOf(code, verb), Message: msg}
	if lbls := e.GetObject("labels"); lbls != nil {
		lbls.Visit(func(k []byte, v *fastjson.Value) {
			if bytes.HasPrefix(k, latencyPrefix) && v.Type() == fastjson.TypeString {
				if s.Annotations == nil {
					s.Annotations = map[string]string{}
				}
				s.Annotations[string(k)] = string(v.GetStringBytes())
			}
		})
	}
	uri, lost := listOptionsURI(p.Get("request"))
	s.RequestURI = uri
	d.deliverSynth(&s, lost, at, fn)
}

// parseResourceName maps GKE's resourceName, <group>/<version>/[namespaces/
// <ns>/]<resource>[/<name>[/<subresource>]] with group "core" for the core
// group, to an objectRef.
func parseResourceName(rn string) *synthRef {
	parts := strings.Split(rn, "/")
	if len(parts) < 3 {
		return nil
	}
	ref := &synthRef{APIGroup: parts[0]}
	if ref.APIGroup == "core" {
		ref.APIGroup = ""
	}
	rest := parts[2:]
	if len(rest) >= 3 && rest[0] == "namespaces" {
		ref.Namespace, rest = rest[1], rest[2:]
	} else if len(rest) == 2 && rest[0] == "namespaces" {
		// core/v1/namespaces/NAME: the namespace object itself.
		return &synthRef{Resource: "namespaces", Name: rest[1]}
	}
	ref.Resource = rest[0]
	if len(rest) > 1 {
		ref.Name = rest[1]
	}
	if len(rest) > 2 {
		ref.Subresource = rest[2]
	}
	return ref
}

// httpCodeOf maps a google.rpc.Code to the HTTP code the apiserver answered
// (the inverse of GKE's mapping; several HTTP codes share one gRPC code, so
// this picks the one Kubernetes uses). OK is 201 for create: the apiserver
// answers a successful create 201 Created (k8s.io/apiserver@v0.36.3
// pkg/endpoints/handlers/create.go).
func httpCodeOf(grpc int, verb string) int {
	switch grpc {
	case 0:
		if verb == "create" {
			return 201
		}
		return 200
	case 3, 11:
		return 400
	case 16:
		return 401
	case 7:
		return 403
	case 5:
		return 404
	case 6, 10:
		return 409
	case 9:
		return 422
	case 8:
		return 429
	case 1:
		return 499
	case 12:
		return 405
	case 14:
		return 503
	case 4:
		return 504
	}
	return 500
}

// listOptionsURI rebuilds a request URI's query from the ListOptions GKE may
// log as protoPayload.request for reads. lost is true when there is none:
// then whether a read was a page, a WatchList or cache-served is unknown.
func listOptionsURI(req *fastjson.Value) (uri string, lost bool) {
	if req == nil || req.Type() != fastjson.TypeObject {
		return "", true
	}
	q := make([]string, 0, 8)
	found := false
	for _, k := range []string{"resourceVersion", "resourceVersionMatch", "continue", "limit", "sendInitialEvents",
		"fieldSelector", "labelSelector", "watch"} {
		v := req.Get(k)
		if v == nil {
			continue
		}
		found = true
		var s string
		switch v.Type() {
		case fastjson.TypeString:
			s = string(v.GetStringBytes())
		case fastjson.TypeTrue:
			s = "true"
		case fastjson.TypeFalse:
			s = "false"
		case fastjson.TypeNumber:
			s = v.String()
		default:
			continue
		}
		q = append(q, k+"="+queryEscape(s))
	}
	if !found {
		return "", true
	}
	return "/?" + strings.Join(q, "&"), false
}

func queryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// aksAuditRow rebuilds the event of a row of Log Analytics' resource-
// specific AKSAudit table (columns AuditId, Verb, RequestUri, User,
// SourceIps, UserAgent, ObjectRef, ResponseStatus, Stage, ...).
func (d *Decoder) aksAuditRow(v *fastjson.Value, at loc, fn func(*Event)) {
	gs := func(keys ...string) string { return string(v.GetStringBytes(keys...)) }
	s := synthEvent{Kind: "Event", APIVersion: "audit.k8s.io/v1", AuditID: gs("AuditId"), Stage: gs("Stage"),
		Verb: gs("Verb"), RequestURI: gs("RequestUri"), UserAgent: gs("UserAgent"),
		RequestReceivedTimestamp: gs("RequestReceivedTime"), StageTimestamp: gs("StageReceivedTime")}
	if s.StageTimestamp == "" {
		s.StageTimestamp = gs("TimeGenerated")
	}
	obj := func(key string) *fastjson.Value {
		x := v.Get(key)
		if x != nil && x.Type() == fastjson.TypeString {
			// Log Analytics exports dynamic columns as JSON text.
			p, err := fastjson.ParseBytes(x.GetStringBytes())
			if err == nil {
				return p
			}
		}
		return x
	}
	if u := obj("User"); u != nil {
		s.User.Username = string(u.GetStringBytes("username"))
		for _, g := range u.GetArray("groups") {
			s.User.Groups = append(s.User.Groups, string(g.GetStringBytes()))
		}
		if nn := u.GetArray("extra", "authentication.kubernetes.io/node-name"); len(nn) > 0 {
			s.User.Extra = map[string][]string{"authentication.kubernetes.io/node-name": {string(nn[0].GetStringBytes())}}
		}
	}
	if ips := obj("SourceIps"); ips != nil {
		for _, ip := range ips.GetArray() {
			s.SourceIPs = append(s.SourceIPs, string(ip.GetStringBytes()))
		}
	}
	if r := obj("ObjectRef"); r != nil {
		s.ObjectRef = &synthRef{Resource: string(r.GetStringBytes("resource")), Subresource: string(r.GetStringBytes("subresource")),
			APIGroup: string(r.GetStringBytes("apiGroup")), Namespace: string(r.GetStringBytes("namespace")), Name: string(r.GetStringBytes("name"))}
	}
	if r := obj("ResponseStatus"); r != nil {
		s.ResponseStatus = &synthStatus{Code: r.GetInt("code"), Message: string(r.GetStringBytes("message"))}
	}
	if a := obj("Annotations"); a != nil {
		if o, err := a.Object(); err == nil {
			o.Visit(func(k []byte, x *fastjson.Value) {
				if bytes.HasPrefix(k, latencyPrefix) {
					if s.Annotations == nil {
						s.Annotations = map[string]string{}
					}
					s.Annotations[string(k)] = string(x.GetStringBytes())
				}
			})
		}
	}
	d.deliverSynth(&s, false, at, fn)
}

// firehoseRecord decodes one entry of a Firehose HTTP endpoint delivery's
// records: {"data": "<base64>"}, the record as its producer put it (a
// CloudWatch Logs subscription message, gzip'd, or JSON lines of events).
func (d *Decoder) firehoseRecord(v *fastjson.Value, at loc, fn func(*Event)) {
	data := v.Get("data")
	if data.Type() != fastjson.TypeString {
		d.skip(at, ErrMalformed, "data is not a string", 0)
		return
	}
	d.base64Payload(data.GetStringBytes(), at, "data", fn)
}

// describeNonJSON names a body that is not JSON at all by its first bytes,
// for the 400 answer: the encodings log shippers use when misconfigured.
func describeNonJSON(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	switch c := b[0]; {
	case bytes.HasPrefix(b, GzipMagic):
		return "gzip data (nested too deep, or corrupt)"
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd data (herd reads gzip)"
	case c >= 0x80 && c <= 0x9f, c >= 0xdc && c <= 0xdf:
		return "msgpack (Fluent Forward?), not JSON"
	case c == 0x0a && len(b) > 1 && b[1] < 0x80:
		return "protobuf (OTLP?), not JSON"
	}
	return ""
}
