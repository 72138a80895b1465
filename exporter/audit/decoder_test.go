package audit

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// ev renders a minimal valid event with the given auditID; extra members
// (already JSON, with a leading comma) are appended.
func ev(id string, extra ...string) string {
	return `{"auditID":"` + id + `","stage":"ResponseComplete","verb":"list"` + strings.Join(extra, "") + `}`
}

func ids(rs []rec) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.AuditID)
	}
	return out
}

// kubeletList is a full event as kube-apiserver 1.36 writes it: '&' escaped
// as \u0026, a percent-encoded field selector.
const kubeletList = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"5f0c6a1e-9d0b-4a47-9b1e-2f1d3c4b5a69","stage":"ResponseComplete","requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a\u0026limit=500\u0026resourceVersion=0","verb":"list","user":{"username":"system:node:node-a","groups":["system:nodes","system:authenticated"]},"sourceIPs":["10.0.0.7","10.1.1.1"],"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-03-14T09:26:53.123456Z","stageTimestamp":"2026-03-14T09:26:53.589793Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}`

// tooLarge is the incident's 504 (background 000): a kubelet LIST of
// csidrivers with a resourceVersion the watch cache never reaches.
const tooLarge = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0b8e3c1d-77aa-4f10-9c55-3f6c2d1e0a99","stage":"ResponseComplete","requestURI":"/apis/storage.k8s.io/v1/csidrivers?limit=500\u0026resourceVersion=191700552","verb":"list","user":{"username":"system:node:worker-7"},"sourceIPs":["192.168.10.57"],"userAgent":"kubelet/v1.20.4 (linux/amd64) kubernetes/e87da0b","objectRef":{"resource":"csidrivers","apiGroup":"storage.k8s.io","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","message":"Timeout: Too large resource version: 191700552, current: 187970861","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1},"code":504},"stageTimestamp":"2021-06-01T02:03:04+09:00"}`

func TestDecodeFields(t *testing.T) {
	tests := []struct {
		name string
		body string
		want rec
	}{
		{"kubelet list", kubeletList, rec{
			AuditID: "5f0c6a1e-9d0b-4a47-9b1e-2f1d3c4b5a69", Verb: "list", User: "system:node:node-a",
			UserAgent: "kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3", SourceIP: "10.0.0.7",
			Resource: "pods", Stage: StageResponseComplete, Code: 200,
			TS: time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC).UnixNano(),
			RV: "0", FieldSelectorNode: "node-a", Limit: 500, SourceIPTail: "10.0.0.7|10.1.1.1",
			RequestReceived: time.Date(2026, 3, 14, 9, 26, 53, 123456000, time.UTC).UnixNano(),
		}},
		{"too large resource version", tooLarge, rec{
			AuditID: "0b8e3c1d-77aa-4f10-9c55-3f6c2d1e0a99", Verb: "list", User: "system:node:worker-7",
			UserAgent: "kubelet/v1.20.4 (linux/amd64) kubernetes/e87da0b", SourceIP: "192.168.10.57",
			Resource: "csidrivers", APIGroup: "storage.k8s.io", Stage: StageResponseComplete, Code: 504,
			TooLarge: true, TS: time.Date(2021, 6, 1, 2, 3, 4, 0, time.FixedZone("", 9*3600)).UnixNano(),
			RV: "191700552", Limit: 500, SourceIPTail: "192.168.10.57",
		}},
		{"watch list relist, all objectRef fields", `{"auditID":"w1","stage":"ResponseStarted","verb":"watch",` +
			`"requestURI":"/apis/cilium.io/v2/namespaces/kube-system/ciliumendpoints/x/status?watch=true\u0026sendInitialEvents=true\u0026resourceVersionMatch=NotOlderThan\u0026allowWatchBookmarks=true",` +
			`"objectRef":{"resource":"ciliumendpoints","subresource":"status","apiGroup":"cilium.io","namespace":"kube-system","name":"x"},` +
			`"stageTimestamp":"2026-01-02T03:04:05.1Z"}`, rec{
			AuditID: "w1", Verb: "watch", Stage: StageResponseStarted, Resource: "ciliumendpoints", Subresource: "status",
			APIGroup: "cilium.io", Namespace: "kube-system", Name: "x", SendInitialEvents: true, RVMatch: "NotOlderThan",
			TS: time.Date(2026, 1, 2, 3, 4, 5, 100000000, time.UTC).UnixNano(), Unauthenticated: true}},
		{"list page with continue", ev("p2", `,"requestURI":"/api/v1/pods?continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzfQ%3D%3D\u0026limit=500"`),
			rec{AuditID: "p2", Verb: "list", Stage: StageResponseComplete, Continue: true, Limit: 500, Unauthenticated: true}},
		{"unknown stage is Other, Panic is Panic", `[` + `{"auditID":"s","stage":"Weird","verb":"get"}` + `]`,
			rec{AuditID: "s", Verb: "get", Stage: StageOther, Unauthenticated: true}},
		{"escaped strings and keys", `{"aud\u0069tID":"e\u00e9\"1","stage":"Panic","verb":"get","userAgent":"a\\b\/c\td","user":{"user\u006eame":"system:node:n\u00f6de"}}`,
			rec{AuditID: "eé\"1", Verb: "get", Stage: StagePanic, UserAgent: "a\\b/c\td", User: "system:node:nöde"}},
		{"surrogate pairs and bad escapes kept as written", `{"auditID":"\ud83d\ude00|\ud83d|\u12|\q","stage":"ResponseComplete","verb":"get"}`,
			rec{AuditID: "😀|\\ud83d|\\u12|\\q", Verb: "get", Stage: StageResponseComplete, Unauthenticated: true}},
		{"numbers where strings belong are absent", ev("n1", `,"userAgent":5,"sourceIPs":[7,"10.0.0.1"],"user":{"username":true},"objectRef":{"resource":["pods"]},"requestURI":42,"stageTimestamp":1700000000`),
			rec{AuditID: "n1", Verb: "list", Stage: StageResponseComplete, Unauthenticated: true, SourceIPTail: "10.0.0.1"}},
		{"string where number belongs", ev("c1", `,"responseStatus":{"code":"200","message":7}`),
			rec{AuditID: "c1", Verb: "list", Stage: StageResponseComplete, Unauthenticated: true}},
		{"codes that are not int32", `[` + ev("c2", `,"responseStatus":{"code":200.0}`) + `,` + ev("c3", `,"responseStatus":{"code":-1}`) + `,` +
			ev("c4", `,"responseStatus":{"code":99999999999}`) + `,` + ev("c5", `,"responseStatus":{"code":2e2}`) + `]`,
			rec{AuditID: "c2", Verb: "list", Stage: StageResponseComplete, Unauthenticated: true}},
		{"duplicate keys: first wins at every level", `{"auditID":"first","auditID":"second","stage":"ResponseComplete","verb":"get","verb":"delete",` +
			`"user":{"username":"a","username":"b"},"user":{"username":"c"},"objectRef":{"resource":"pods","resource":"nodes"},` +
			`"responseStatus":{"code":200,"code":500},"requestURI":"/api/v1/pods?limit=1\u0026limit=2\u0026resourceVersion=5\u0026resourceVersion=6"}`,
			rec{AuditID: "first", Verb: "get", Stage: StageResponseComplete, User: "a", Resource: "pods", Code: 200, Limit: 1, RV: "5"}},
		{"invalid UTF-8 and NUL inside strings pass through", "{\"auditID\":\"a\xff\xfe\x00b\",\"stage\":\"ResponseComplete\",\"verb\":\"get\",\"userAgent\":\"\xc3\x28\x00\"}",
			rec{AuditID: "a\xff\xfe\x00b", Verb: "get", Stage: StageResponseComplete, UserAgent: "\xc3\x28\x00", Unauthenticated: true}},
		{"legacy timestamp when stageTimestamp is absent", ev("l1", `,"timestamp":"2017-09-11T19:55:05Z"`),
			rec{AuditID: "l1", Verb: "list", Stage: StageResponseComplete, TS: time.Date(2017, 9, 11, 19, 55, 5, 0, time.UTC).UnixNano(), Unauthenticated: true}},
		{"first sourceIP of several, empty array", `[` + ev("ip", `,"sourceIPs":[]`) + `]`,
			rec{AuditID: "ip", Verb: "list", Stage: StageResponseComplete, Unauthenticated: true}},
		{"objects where strings belong are skipped whole", ev("o1", `,"userAgent":{"a":[1,{"b":"}"}]},"stage":{"x":1}`),
			rec{AuditID: "o1", Verb: "list", Stage: StageResponseComplete, Unauthenticated: true}},
		// Trust and cost (issues 13 and 16).
		{"forged X-Forwarded-For: the tail keeps the last four, the peer last", ev("x1",
			`,"user":{"username":"system:serviceaccount:kube-system:cilium","groups":["system:serviceaccounts","system:authenticated"],`+
				`"extra":{"authentication.kubernetes.io/credential-id":["JTI=1"],"authentication.kubernetes.io/node-name":["node-7","node-8"],"authentication.kubernetes.io/node-uid":["u"]}}`,
			`,"sourceIPs":["10.0.0.1","10.0.0.2","10.0.0.3","10.0.0.4","10.0.0.5","127.0.0.1"]`),
			rec{AuditID: "x1", Verb: "list", Stage: StageResponseComplete, User: "system:serviceaccount:kube-system:cilium",
				SourceIP: "10.0.0.1", SourceIPTail: "10.0.0.3|10.0.0.4|10.0.0.5|127.0.0.1", NodeNameExtra: "node-7"}},
		{"anonymous", ev("an", `,"user":{"username":"system:anonymous","groups":["system:unauthenticated"]}`),
			rec{AuditID: "an", Verb: "list", Stage: StageResponseComplete, User: "system:anonymous", Unauthenticated: true}},
		{"system:unauthenticated group under another name, escaped", ev("ug", `,"user":{"groups":["x","system:unauth\u0065nticated"],"username":"bob"}`),
			rec{AuditID: "ug", Verb: "list", Stage: StageResponseComplete, User: "bob", Unauthenticated: true}},
		{"node-name extra: empty list, not strings, escaped key", `[` + ev("e1", `,"user":{"username":"u","extra":{"authentication.kubernetes.io/node-name":[]}}`) + `,` +
			ev("e2", `,"user":{"username":"u","extra":{"authentication.kubernetes.io/node-name":[7,"n"]}}`) + `]` +
			ev("e3", `,"user":{"username":"u","extra":{"authentication.kubernetes.io\/node-name":["esc"]}}`),
			rec{AuditID: "e1", Verb: "list", Stage: StageResponseComplete, User: "u"}},
		{"latency annotations of a slow list", ev("lat",
			`,"user":{"username":"u"},"annotations":{"apiserver.latency.k8s.io/etcd":"1.204s","apiserver.latency.k8s.io/total":"1m2.5s",`+
				`"apiserver.latency.k8s.io/serialize-response-object":"512.3ms","apiserver.latency.k8s.io/apf-queue-wait":"850µs",`+
				`"apiserver.latency.k8s.io/response-write":"1.5\u00b5s","apiserver.latency.k8s.io/decode-response-object":"3ns",`+
				`"apiserver.latency.k8s.io/authentication":"-1s","apiserver.latency.k8s.io/authorization":"fast","apiserver.latency.k8s.io/future":"1s",`+
				`"apiserver.latency.k8s.io/transform-response-object":7,"authorization.k8s.io/decision":"allow"}`, `,"requestReceivedTimestamp":"2026-01-02T03:04:05.000006Z"`),
			rec{AuditID: "lat", Verb: "list", Stage: StageResponseComplete, User: "u",
				Latency: [NumLatencyPhases]int64{LatencyEtcd: 1204e6, LatencyTotal: 62.5e9, LatencySerializeResponse: 512.3e6,
					LatencyAPFQueueWait: 850e3, LatencyResponseWrite: 1500, LatencyDecodeResponse: 3},
				RequestReceived: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC).UnixNano()}},
		{"shape: per-object reflector, label selector, other field terms", ev("sh", `,"user":{"username":"u"}`,
			`,"objectRef":{"resource":"configmaps"},"requestURI":"/api/v1/namespaces/a/configmaps?fieldSelector=metadata.name%3Dkube-root-ca.crt%2Cstatus.phase%21%3DFailed\u0026labelSelector=app%3Dx"`),
			rec{AuditID: "sh", Verb: "list", Stage: StageResponseComplete, User: "u", Resource: "configmaps",
				FieldSelectorName: "kube-root-ca.crt", OtherFieldSelector: true, LabelSelect: true}},
		{"shape: metadata.name on nodes is the node", ev("sn", `,"user":{"username":"u"}`,
			`,"objectRef":{"resource":"nodes"},"requestURI":"/api/v1/nodes?fieldSelector=metadata.name%3Dnode-1\u0026labelSelector="`),
			rec{AuditID: "sn", Verb: "list", Stage: StageResponseComplete, User: "u", Resource: "nodes", FieldSelectorNode: "node-1"}},
		{"shape: spec.nodeName= with no value selects unscheduled pods", ev("su", `,"user":{"username":"u"}`,
			`,"objectRef":{"resource":"pods"},"requestURI":"/api/v1/pods?fieldSelector=spec.nodeName%3D"`),
			rec{AuditID: "su", Verb: "list", Stage: StageResponseComplete, User: "u", Resource: "pods", OtherFieldSelector: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			got, res, err := collect(&d, []byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			if len(got) == 0 {
				t.Fatalf("no event delivered: %+v", res)
			}
			if !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("event\n got %+v\nwant %+v", got[0], tt.want)
			}
		})
	}
}

func TestDecodeForms(t *testing.T) {
	e1, e2, e3 := ev("a1"), ev("a2"), ev("a3")
	records := `{"records": [` +
		`{"category":"kube-audit","properties":{"log":` + quote(e1+"\n") + `,"stream":"stdout"}},` +
		`{"category":"kube-apiserver","properties":{"log":"I0505 16:16:37.655912 1 trace.go:116] Trace[1]: slow"}},` +
		`{"category":"kube-audit-admin","properties":{"log":` + quote(e2) + `}},` +
		`{"properties":{"log":` + quote(e3) + `}}]}`
	tests := []struct {
		name    string
		body    string
		want    []string
		skipped int
	}{
		{"EventList", `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[` + e1 + `,` + e2 + `,` + e3 + `]}`, []string{"a1", "a2", "a3"}, 0},
		{"EventList v1beta1 with typed items", `{"kind":"EventList","apiVersion":"audit.k8s.io/v1beta1","items":[{"kind":"Event","apiVersion":"audit.k8s.io/v1beta1","auditID":"b1","stage":"ResponseComplete","verb":"get"}]}`, []string{"b1"}, 0},
		{"EventList without kind", `{"items":[` + e1 + `]}`, []string{"a1"}, 0},
		{"EventList with items before kind", `{"metadata":{},"items":[` + e1 + `,` + e2 + `],"apiVersion":"audit.k8s.io/v1","kind":"EventList"}`, []string{"a1", "a2"}, 0},
		{"EventList with null items", `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":null}`, []string{}, 0},
		{"EventList with empty items", `{"kind":"EventList","items":[ ]}`, []string{}, 0},
		{"EventList with no items key", `{"kind":"EventList"}`, []string{}, 0},
		{"an Event with an items key is an Event", `{"items":[` + e1 + `],"kind":"Event","auditID":"x","stage":"ResponseComplete","verb":"get"}`, []string{"x"}, 0},
		{"escaped kind before items", `{"kind":"\u0045vent\u004cist","items":[` + e1 + `]}`, []string{"a1"}, 0},
		{"escaped kind after items", `{"items":[` + e1 + `],"metadata":{"x":[1,2]},"kind":"Eve\u006etList"}`, []string{"a1"}, 0},
		{"items win over records without a kind", `{"records":[{"properties":{"log":` + quote(e1) + `}}],"items":[` + e2 + `]}`, []string{"a2"}, 0},
		{"records before a kind of Event", `{"records":[],"kind":"Event","auditID":"r","stage":"ResponseComplete","verb":"get"}`, []string{"r"}, 0},
		{"duplicate items: the first wins", `{"kind":"EventList","items":[` + e1 + `],"items":[` + e2 + `]}`, []string{"a1"}, 0},
		{"single Event", e1, []string{"a1"}, 0},
		{"pretty-printed Event", "{\n  \"auditID\": \"a1\",\n  \"stage\": \"ResponseComplete\",\n\t\"verb\": \"list\"\r\n}\n", []string{"a1"}, 0},
		{"array", " [" + e1 + ",\n" + e2 + "] ", []string{"a1", "a2"}, 0},
		{"empty array", `[]`, []string{}, 0},
		{"JSON lines", e1 + "\n" + e2 + "\n\n   \n" + e3, []string{"a1", "a2", "a3"}, 0},
		{"JSON lines with CRLF and trailing newline", e1 + "\r\n" + e2 + "\r\n", []string{"a1", "a2"}, 0},
		{"mixed stream", `{"kind":"EventList","items":[` + e1 + `]}` + "\n" + e2 + "\n[" + e3 + "]", []string{"a1", "a2", "a3"}, 0},
		{"Azure records wrapper", records, []string{"a1", "a2", "a3"}, 1},
		{"byte order mark", "\xef\xbb\xbf" + e1, []string{"a1"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			got, res, err := collect(&d, []byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			if !reflect.DeepEqual(ids(got), tt.want) {
				t.Errorf("delivered %q, want %q", ids(got), tt.want)
			}
			want := Result{Events: len(tt.want), Skipped: tt.skipped, Bytes: int64(len(tt.body))}
			if res != want {
				t.Errorf("Result %+v, want %+v", res, want)
			}
		})
	}
}

func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// TestDecodeSkipsBadEvents: events that are present but unusable are counted
// and the rest of the batch is still delivered.
func TestDecodeSkipsBadEvents(t *testing.T) {
	big := ev("big", `,"userAgent":"`+strings.Repeat("x", 300<<10)+`"`)
	tests := []struct {
		name       string
		body       string
		max        int
		want       []string
		malformed  int
		oversized  int
		problem    string
		problemErr error
	}{
		{"items that are not objects", `{"kind":"EventList","items":[` + ev("a1") + `, 42, "x", null, [], true,` + ev("a2") + `]}`, 0,
			[]string{"a1", "a2"}, 5, 0, "line 1: items[1] at offset 88: is a number, want an object", ErrMalformed},
		{"wrong kinds and apiVersions", `[{"kind":"Pod","auditID":"p","stage":"ResponseComplete","verb":"get"},` +
			`{"kind":"Event","apiVersion":"v1","auditID":"core","stage":"ResponseComplete","verb":"get"},` +
			`{"kind":5,"auditID":"k5","stage":"ResponseComplete","verb":"get"},` +
			`{"kind":"EventList","items":[` + ev("nested") + `]},` + ev("ok") + `]`, 0,
			[]string{"ok"}, 4, 0, "line 1: [0] at offset 1: kind is not Event", ErrMalformed},
		{"missing required fields", `[{"stage":"ResponseComplete","verb":"get"},{"auditID":"","stage":"ResponseComplete","verb":"get"},` +
			`{"auditID":"s","verb":"get"},{"auditID":"v","stage":"ResponseComplete"},{"auditID":"n","stage":"ResponseComplete","verb":5},{},` + ev("ok") + `]`, 0,
			[]string{"ok"}, 6, 0, "line 1: [0] at offset 1: missing auditID", ErrMalformed},
		{"single event missing its verb", `{"auditID":"x","stage":"ResponseComplete"}`, 0,
			[]string{}, 1, 0, "line 1: event at offset 0: missing verb", ErrMalformed},
		{"an event of 300 KiB in a batch", `{"kind":"EventList","items":[` + ev("a1") + "," + big + "," + ev("a2") + `]}`, 0,
			[]string{"a1", "a2"}, 0, 1, fmt.Sprintf("line 1: items[1] at offset 87: event of %d bytes exceeds the 262144-byte limit", len(big)), ErrOversized},
		{"a configurable limit", "[" + ev("a1") + ",\n" + ev("a22222") + "]", len(ev("a1")),
			[]string{"a1"}, 0, 1, "line 2: [1] at offset 60: event of 61 bytes exceeds the 57-byte limit", ErrOversized},
		{"oversized single event", big, 0, []string{}, 0, 1, fmt.Sprintf("line 1: event at offset 0: event of %d bytes exceeds the 262144-byte limit", len(big)), ErrOversized},
		{"records that are not audit events", `{"records":[1,{"category":"kube-audit","properties":{"log":"not json"}},` +
			`{"category":"kube-audit","properties":{"log":"[]"}},{"category":"kube-audit","properties":{}},` +
			`{"category":"kube-audit","properties":{"log":` + quote(ev("a1")+" x") + `}},` +
			`{"category":"kube-audit","properties":{"log":` + quote(ev("a2")) + `}}]}`, 0,
			[]string{"a2"}, 5, 0, "line 1: records[0] at offset 12: is a number, want an object", ErrMalformed},
		{"record with an oversized log", `{"records":[{"properties":{"log":` + quote(ev("a1", `,"x":"`+strings.Repeat("y", 100)+`"`)) + `}}]}`, 100,
			[]string{}, 0, 1, "line 1: records[0] at offset 12: event of 164 bytes exceeds the 100-byte limit", ErrOversized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decoder{MaxEventBytes: tt.max}
			got, res, err := collect(&d, []byte(tt.body))
			if err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			checkDecoded(t, got, res, tt.body, tt.want, tt.malformed, tt.oversized, tt.problem)
			if !errors.Is(res.Problem, tt.problemErr) {
				t.Errorf("Problem %v is not %v", res.Problem, tt.problemErr)
			}
		})
	}
}

// TestDecodeBadBodies: a body that is not audit JSON is an error that says
// what and where; what came before it was delivered.
func TestDecodeBadBodies(t *testing.T) {
	e1 := ev("a1")
	tests := []struct {
		name string
		body string
		want []string
		err  string
	}{
		{"empty", "", nil, "decode audit body: line 1: empty body: no JSON value at offset 0"},
		{"only whitespace", " \n\t\r\n", nil, "decode audit body: line 3: empty body: no JSON value at offset 5"},
		{"not JSON", "hello", nil, "decode audit body: line 1: invalid character 'h' looking for beginning of value at offset 0"},
		{"top-level number", "42", nil, "decode audit body: line 1: top-level value is a number, want an audit Event, an EventList, an array of events or a records wrapper at offset 0"},
		{"top-level null", "null", nil, "decode audit body: line 1: top-level value is null, want an audit Event, an EventList, an array of events or a records wrapper at offset 0"},
		{"items is an object", `{"kind":"EventList","items":{}}`, nil, "decode audit body: line 1: EventList items is an object, want an array at offset 28"},
		{"records is a string", `{"records":"x"}`, nil, "decode audit body: line 1: records is a string, want an array at offset 11"},
		{"truncated in a string", `{"kind":"EventList","items":[` + e1 + `,{"auditID":"a2`, []string{"a1"},
			fmt.Sprintf("decode audit body: line 1: unexpected end of JSON (in the string opened at offset %d) at offset %d", 29+len(e1)+12, 29+len(e1)+15)},
		{"truncated after an element", `{"kind":"EventList","items":[` + e1, []string{"a1"},
			fmt.Sprintf("decode audit body: line 1: unexpected end of JSON after array element at offset %d", 29+len(e1))},
		{"truncated JSON lines", e1 + "\n" + e1 + "\n{\"auditID\":", []string{"a1", "a1"},
			fmt.Sprintf("decode audit body: line 3: unexpected end of JSON looking for beginning of value at offset %d", 2*len(e1)+2+11)},
		{"garbage after a value", e1 + " ]", []string{"a1"},
			fmt.Sprintf("decode audit body: line 1: invalid character ']' looking for beginning of value at offset %d", len(e1)+1)},
		{"missing comma", `[{"a":1} {"b":2}]`, nil, "decode audit body: line 1: invalid character '{' after array element at offset 9"},
		{"missing colon", `{"a" 1}`, nil, "decode audit body: line 1: invalid character '1' after object key at offset 5"},
		{"trailing comma", `{"a":1,}`, nil, "decode audit body: line 1: invalid character '}' looking for beginning of object key string at offset 7"},
		{"single quotes", `{'a':1}`, nil, `decode audit body: line 1: invalid character '\'' looking for beginning of object key string at offset 1`},
		{"bad number", `[{"a":01}]`, nil, "decode audit body: line 1: invalid character '1' after object member at offset 7"},
		{"bad literal", `[tru]`, nil, "decode audit body: line 1: invalid character ']' in literal true at offset 4"},
		{"NaN", `[NaN]`, nil, "decode audit body: line 1: invalid character 'N' looking for beginning of value at offset 1"},
		{"NUL outside strings", "[\x00]", nil, "decode audit body: line 1: invalid byte 0x00 looking for beginning of value at offset 1"},
		{"deep nesting", strings.Repeat("[", 10000), nil, "decode audit body: line 1: nesting deeper than 256 levels at offset 256"},
		{"deep nesting in an event", `{"kind":"EventList","items":[{"auditID":"x","a":` + strings.Repeat(`{"a":`, 300), nil,
			"decode audit body: line 1: nesting deeper than 256 levels at offset 1313"},
		{"deep nesting closed", strings.Repeat("[", 257) + strings.Repeat("]", 257), nil, "decode audit body: line 1: nesting deeper than 256 levels at offset 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decoder
			got, res, err := collect(&d, []byte(tt.body))
			if err == nil || err.Error() != tt.err {
				t.Fatalf("error = %v\n  want %s", err, tt.err)
			}
			var be *BodyError
			if !errors.As(err, &be) || !errors.Is(err, ErrMalformed) {
				t.Errorf("error %T is not a *BodyError and ErrMalformed", err)
			}
			if !reflect.DeepEqual(ids(got), append([]string{}, tt.want...)) {
				t.Errorf("delivered %q, want %q", ids(got), tt.want)
			}
			if res.Events != len(tt.want) || res.Bytes != int64(len(tt.body)) {
				t.Errorf("Result %+v", res)
			}
		})
	}
}

func TestDeepNestingWithinLimit(t *testing.T) {
	// 250 levels inside an event inside an EventList: legal, and skipped.
	body := `{"kind":"EventList","items":[` + ev("deep", `,"requestObject":`+strings.Repeat("[", 250)+strings.Repeat("]", 250)) + `]}`
	var d Decoder
	got, _, err := collect(&d, []byte(body))
	if err != nil || len(got) != 1 {
		t.Fatalf("got %d events, %v", len(got), err)
	}
}

func TestDecodeHugeBody(t *testing.T) {
	// 17 MiB: more than the handler accepts, so the decoder must cope.
	var b strings.Builder
	b.WriteString(`{"kind":"EventList","items":[`)
	n := 0
	for b.Len() < 17<<20 {
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(benchEvent(n))
		n++
	}
	b.WriteString(`]}`)
	var d Decoder
	count := 0
	res, err := d.DecodeBody([]byte(b.String()), func(*Event) { count++ })
	if err != nil || count != n || res.Events != n {
		t.Fatalf("17 MiB EventList: %d of %d delivered, %+v, %v", count, n, res, err)
	}

	// One 17 MiB event: oversized, never parsed into anything.
	huge := ev("huge", `,"requestObject":{"data":"`+strings.Repeat("A", 17<<20)+`"}`)
	res, err = d.DecodeBody([]byte(huge), func(*Event) { t.Error("oversized event delivered") })
	if err != nil || res.Oversized != 1 {
		t.Fatalf("17 MiB event: %+v, %v", res, err)
	}

	// 17 MiB of empty objects: millions of malformed events, one problem
	// report, nothing retained per event.
	empties := "[" + strings.Repeat("{},", 17<<20/3) + "{}]"
	res, err = d.DecodeBody([]byte(empties), func(*Event) {})
	if err != nil || res.Malformed != 17<<20/3+1 || res.Problem == nil {
		t.Fatalf("17 MiB of {}: %+v, %v", res, err)
	}
}

func TestDecodeNDJSON(t *testing.T) {
	e1, e2 := ev("a1"), ev("a2")
	tests := []struct {
		name      string
		body      string
		max       int
		want      []string
		malformed int
		oversized int
		problem   string
		err       string
	}{
		{"good lines", e1 + "\n\n" + e2 + "\n", 0, []string{"a1", "a2"}, 0, 0, "", ""},
		{"empty body", "", 0, []string{}, 0, 0, "", ""},
		{"a broken line among good ones", e1 + "\n{\"auditID\":\n" + e2, 0, []string{"a1", "a2"}, 1, 0,
			fmt.Sprintf("line 2: unexpected end of JSON looking for beginning of value at offset %d", len(e1)+12), ""},
		{"a bad event among good ones", e1 + "\n" + `{"auditID":"x"}` + "\n" + e2, 0, []string{"a1", "a2"}, 1, 0,
			fmt.Sprintf("line 2: event at offset %d: missing stage", len(e1)+1), ""},
		{"an over-long line", e1 + "\n" + ev("a22222") + "\n" + e2, len(e1), []string{"a1", "a2"}, 0, 1,
			fmt.Sprintf("line 2: event at offset %d: line of 61 bytes exceeds the 57-byte limit", len(e1)+1), ""},
		{"nothing is JSON", "hello\nworld\n", 0, []string{}, 2, 0,
			"line 1: invalid character 'h' looking for beginning of value at offset 0",
			"decode audit body: line 1: invalid character 'h' looking for beginning of value at offset 0"},
		{"a line may hold a list", `{"kind":"EventList","items":[` + e1 + `,` + e2 + `]}`, 0, []string{"a1", "a2"}, 0, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decoder{MaxEventBytes: tt.max}
			var got []rec
			res, err := d.DecodeNDJSON([]byte(tt.body), func(ev *Event) { got = append(got, own(ev)) })
			if fmt.Sprint(err) != fmt.Sprint(map[bool]any{true: nil, false: tt.err}[tt.err == ""]) {
				t.Errorf("error = %v, want %q", err, tt.err)
			}
			checkDecoded(t, got, res, tt.body, tt.want, tt.malformed, tt.oversized, tt.problem)
		})
	}
}

// checkDecoded compares what a decode delivered and counted with a table
// row: the auditIDs in order, the events, malformed and oversized counts,
// the bytes read (the whole body) and the problem reported ("" for none).
func checkDecoded(t *testing.T, got []rec, res Result, body string, want []string, malformed, oversized int, problem string) {
	t.Helper()
	if !reflect.DeepEqual(ids(got), want) {
		t.Errorf("delivered %q, want %q", ids(got), want)
	}
	if res.Events != len(want) || res.Malformed != malformed || res.Oversized != oversized || res.Bytes != int64(len(body)) {
		t.Errorf("Result %+v, want %d events, %d malformed, %d oversized, %d bytes", res, len(want), malformed, oversized, len(body))
	}
	if fmt.Sprint(res.Problem) != fmt.Sprint(map[bool]any{true: nil, false: problem}[problem == ""]) {
		t.Errorf("Problem = %v\n       want %s", res.Problem, problem)
	}
}

func TestDecodeLine(t *testing.T) {
	d := Decoder{MaxEventBytes: 100}
	var got []string
	fn := func(ev *Event) { got = append(got, string(ev.AuditID)) }
	if err := d.DecodeLine([]byte(" \r"), fn); err != nil || len(got) != 0 {
		t.Errorf("blank line: %v, %q", err, got)
	}
	if err := d.DecodeLine([]byte(ev("a1")+"\r"), fn); err != nil || !reflect.DeepEqual(got, []string{"a1"}) {
		t.Errorf("event line: %v, %q", err, got)
	}
	err := d.DecodeLine([]byte(`{"auditID":"x","verb":"get"}`), fn)
	var ee *EventError
	if !errors.Is(err, ErrMalformed) || !errors.As(err, &ee) || err.Error() != "decode audit line: event at offset 0: missing stage" {
		t.Errorf("malformed line: %v", err)
	}
	err = d.DecodeLine([]byte(`{"auditID":`), fn)
	var be *BodyError
	if !errors.As(err, &be) || err.Error() != "decode audit line: unexpected end of JSON looking for beginning of value at offset 11" {
		t.Errorf("broken line: %v", err)
	}
	err = d.DecodeLine([]byte(ev("a2", `,"x":"`+strings.Repeat("y", 100)+`"`)), fn)
	if !errors.Is(err, ErrOversized) || err.Error() != "decode audit line: event at offset 0: line of 164 bytes exceeds the 100-byte limit" {
		t.Errorf("long line: %v", err)
	}
	if len(got) != 1 {
		t.Errorf("delivered %q", got)
	}
}

// TestDecodeAllocs guards the hot path's allocation budget (SPEC §7: < 10
// per 400-event batch); it allocates nothing once warm.
func TestDecodeAllocs(t *testing.T) {
	body := benchBatch(400)
	var d Decoder
	n := 0
	fn := func(ev *Event) { n += len(ev.AuditID) }
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := d.DecodeBody(body, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("DecodeBody allocates %.1f times per 400-event batch, want 0", allocs)
	}
	line := []byte(kubeletList)
	allocs = testing.AllocsPerRun(100, func() {
		if err := d.DecodeLine(line, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("DecodeLine allocates %.1f times per line, want 0", allocs)
	}
}

// TestBenchBatchDecodes checks the benchmark's body: every event delivered,
// with the fields the generator put in.
func TestBenchBatchDecodes(t *testing.T) {
	var d Decoder
	got, res, err := collect(&d, benchBatch(400))
	if err != nil || res.Events != 400 || res.Malformed+res.Oversized != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
	if g := got[0]; g.FieldSelectorNode != "ip-10-0-0-0.eu-west-1.compute.internal" || g.RV != "0" || g.Limit != 500 || g.User != "system:node:ip-10-0-0-0.eu-west-1.compute.internal" {
		t.Errorf("event 0: %+v", g)
	}
	if g := got[3]; !g.SendInitialEvents || g.RVMatch != "NotOlderThan" || g.Stage != StageResponseStarted || g.Verb != "watch" {
		t.Errorf("event 3: %+v", g)
	}
	if g := got[4]; g.FieldSelectorNode != "" || g.Resource != "ciliumnodes" {
		t.Errorf("event 4 (metadata.name on ciliumnodes is no node): %+v", g)
	}
	if g := got[5]; !g.TooLarge || g.Code != 504 {
		t.Errorf("event 5: %+v", g)
	}
}

func TestStageString(t *testing.T) {
	for s, want := range map[Stage]string{StageOther: "Other", StageRequestReceived: "RequestReceived",
		StageResponseStarted: "ResponseStarted", StageResponseComplete: "ResponseComplete", StagePanic: "Panic"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
