package audit

import (
	"bytes"
	"strings"
	"time"

	"github.com/valyala/fastjson"
)

// rec is an Event copied out of the callback, with strings, so tests can
// keep and compare it.
type rec struct {
	AuditID, Verb, User, UserAgent, SourceIP         string
	Resource, Subresource, APIGroup, Namespace, Name string
	Stage                                            Stage
	Code                                             int32
	TooLarge                                         bool
	TS                                               int64
	RV, RVMatch, FieldSelectorNode                   string
	Continue, SendInitialEvents                      bool
	Limit                                            int64
	// Fields added for trust and cost (issue 13/16); strings joined by
	// "|" keep rec comparable.
	SourceIPTail                    string
	Unauthenticated                 bool
	NodeNameExtra                   string
	Latency                         [NumLatencyPhases]int64
	RequestReceived                 int64
	FieldSelectorName               string
	OtherFieldSelector, LabelSelect bool
}

func own(ev *Event) rec {
	return rec{
		AuditID: string(ev.AuditID), Verb: string(ev.Verb), User: string(ev.User),
		UserAgent: string(ev.UserAgent), SourceIP: string(ev.SourceIP),
		Resource: string(ev.Resource), Subresource: string(ev.Subresource), APIGroup: string(ev.APIGroup),
		Namespace: string(ev.Namespace), Name: string(ev.Name),
		Stage: ev.Stage, Code: ev.Code, TooLarge: ev.TooLargeResourceVersion, TS: ev.StageTimestampNanos,
		RV: string(ev.Query.ResourceVersion), RVMatch: string(ev.Query.ResourceVersionMatch),
		FieldSelectorNode: string(ev.Query.FieldSelectorNode),
		Continue:          ev.Query.Continue, SendInitialEvents: ev.Query.SendInitialEvents, Limit: ev.Query.Limit,
		SourceIPTail:    tailString(ev),
		Unauthenticated: ev.Unauthenticated, NodeNameExtra: string(ev.NodeNameExtra), Latency: ev.Latency,
		RequestReceived: ev.RequestReceivedNanos(), FieldSelectorName: string(ev.Query.FieldSelectorName),
		OtherFieldSelector: ev.Query.OtherFieldSelector, LabelSelect: ev.Query.LabelSelector,
	}
}

func tailString(ev *Event) string {
	var parts []string
	for _, ip := range ev.SourceIPTail[:ev.NumSourceIPTail] {
		parts = append(parts, string(ip))
	}
	return strings.Join(parts, "|")
}

// collect decodes body with DecodeBody and returns the events delivered.
func collect(d *Decoder, body []byte) ([]rec, Result, error) {
	var out []rec
	res, err := d.DecodeBody(body, func(ev *Event) { out = append(out, own(ev)) })
	return out, res, err
}

// first returns the first member named key of o, comparing unescaped keys:
// the rule the decoder follows for duplicate keys.
func first(v *fastjson.Value, key string) *fastjson.Value {
	o, err := v.Object()
	if err != nil {
		return nil
	}
	var found *fastjson.Value
	o.Visit(func(k []byte, v *fastjson.Value) {
		if found == nil && string(k) == key {
			found = v
		}
	})
	return found
}

func oracleStr(v *fastjson.Value) (string, bool) {
	if v == nil || v.Type() != fastjson.TypeString {
		return "", false
	}
	b, _ := v.StringBytes()
	return string(b), true
}

// oracle extracts an event from a fastjson tree, independently of the
// single-pass extractor, following the same documented rules. It is the
// reference the differential tests hold the decoder to. reason is "" when the
// event is usable.
func oracle(v *fastjson.Value) (r rec, reason string) {
	if v.Type() != fastjson.TypeObject {
		return r, "not an object"
	}
	if k := first(v, "kind"); k != nil {
		if s, _ := oracleStr(k); s != "Event" {
			return r, "kind is not Event"
		}
	}
	if a := first(v, "apiVersion"); a != nil {
		if s, _ := oracleStr(a); len(s) < 13 || s[:13] != "audit.k8s.io/" {
			return r, "apiVersion is not audit.k8s.io"
		}
	}
	r.AuditID, _ = oracleStr(first(v, "auditID"))
	if r.AuditID == "" {
		return r, "missing auditID"
	}
	stage, _ := oracleStr(first(v, "stage"))
	if stage == "" {
		return r, "missing stage"
	}
	r.Verb, _ = oracleStr(first(v, "verb"))
	if r.Verb == "" {
		return r, "missing verb"
	}
	switch stage {
	case "RequestReceived":
		r.Stage = StageRequestReceived
	case "ResponseStarted":
		r.Stage = StageResponseStarted
	case "ResponseComplete":
		r.Stage = StageResponseComplete
	case "Panic":
		r.Stage = StagePanic
	}
	if u := first(v, "user"); u != nil {
		r.User, _ = oracleStr(first(u, "username"))
		if g := first(u, "groups"); g != nil && g.Type() == fastjson.TypeArray {
			a, _ := g.Array()
			for _, e := range a {
				if s, _ := oracleStr(e); s == "system:unauthenticated" {
					r.Unauthenticated = true
				}
			}
		}
		if x := first(u, "extra"); x != nil && x.Type() == fastjson.TypeObject {
			if nn := first(x, "authentication.kubernetes.io/node-name"); nn != nil && nn.Type() == fastjson.TypeArray {
				if a, _ := nn.Array(); len(a) > 0 {
					r.NodeNameExtra, _ = oracleStr(a[0])
				}
			}
		}
	}
	r.Unauthenticated = r.Unauthenticated || r.User == "" || r.User == "system:anonymous"
	if ann := first(v, "annotations"); ann != nil && ann.Type() == fastjson.TypeObject {
		for p := LatencyPhase(0); p < NumLatencyPhases; p++ {
			if s, ok := oracleStr(first(ann, LatencyAnnotationPrefix+p.String())); ok {
				if d, err := time.ParseDuration(s); err == nil && d > 0 && len(s) <= 40 {
					r.Latency[p] = int64(d)
				}
			}
		}
	}
	rts, _ := oracleStr(first(v, "requestReceivedTimestamp"))
	r.RequestReceived = parseTimestamp([]byte(rts))
	r.UserAgent, _ = oracleStr(first(v, "userAgent"))
	if ips := first(v, "sourceIPs"); ips != nil && ips.Type() == fastjson.TypeArray {
		if a, _ := ips.Array(); len(a) > 0 {
			r.SourceIP, _ = oracleStr(a[0])
			var strs []string
			for _, e := range a {
				if s, ok := oracleStr(e); ok {
					strs = append(strs, s)
				}
			}
			r.SourceIPTail = strings.Join(strs[max(0, len(strs)-MaxSourceIPTail):], "|")
		}
	}
	if o := first(v, "objectRef"); o != nil {
		r.Resource, _ = oracleStr(first(o, "resource"))
		r.Subresource, _ = oracleStr(first(o, "subresource"))
		r.APIGroup, _ = oracleStr(first(o, "apiGroup"))
		r.Namespace, _ = oracleStr(first(o, "namespace"))
		r.Name, _ = oracleStr(first(o, "name"))
	}
	if s := first(v, "responseStatus"); s != nil {
		if c := first(s, "code"); c != nil && c.Type() == fastjson.TypeNumber {
			if n, err := c.Int64(); err == nil && n >= 0 && n <= 1<<31-1 {
				r.Code = int32(n)
			}
		}
		msg, _ := oracleStr(first(s, "message"))
		r.TooLarge = bytes.Contains([]byte(msg), tooLargeRV)
	}
	ts, _ := oracleStr(first(v, "stageTimestamp"))
	r.TS = parseTimestamp([]byte(ts))
	if lts, ok := oracleStr(first(v, "timestamp")); ok && r.TS == 0 {
		r.TS = parseTimestamp([]byte(lts))
	}
	if uri, ok := oracleStr(first(v, "requestURI")); ok {
		var q Query
		var scratch []byte
		parseQuery(&q, []byte(uri), []byte(r.Resource), &scratch)
		r.RV, r.RVMatch, r.FieldSelectorNode = string(q.ResourceVersion), string(q.ResourceVersionMatch), string(q.FieldSelectorNode)
		r.Continue, r.SendInitialEvents, r.Limit = q.Continue, q.SendInitialEvents, q.Limit
		r.FieldSelectorName, r.OtherFieldSelector, r.LabelSelect = string(q.FieldSelectorName), q.OtherFieldSelector, q.LabelSelector
	}
	return r, ""
}
