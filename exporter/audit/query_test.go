package audit

import (
	"testing"
	"time"
)

func TestParseQuery(t *testing.T) {
	type q struct {
		RV, RVMatch, Node string
		Continue, SIE     bool
		Limit             int64
	}
	tests := []struct {
		name     string
		uri      string
		resource string
		want     q
	}{
		{"no query", "/api/v1/pods", "pods", q{}},
		{"empty query", "/api/v1/pods?", "pods", q{}},
		{"kubelet list", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=500&resourceVersion=0", "pods",
			q{RV: "0", Node: "node-a", Limit: 500}},
		{"unescaped selector", "/api/v1/pods?fieldSelector=spec.nodeName=node-a", "pods", q{Node: "node-a"}},
		{"== selector", "/api/v1/pods?fieldSelector=spec.nodeName%3D%3Dnode-a", "pods", q{Node: "node-a"}},
		{"!= selector is no node", "/api/v1/pods?fieldSelector=spec.nodeName%21%3Dnode-a", "pods", q{}},
		{"longer field name is no node", "/api/v1/pods?fieldSelector=spec.nodeNameX%3Dnode-a", "pods", q{}},
		{"compound selector", "/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed%2Cspec.nodeName%3Dip-10-0-1-2.ec2.internal", "pods",
			q{Node: "ip-10-0-1-2.ec2.internal"}},
		{"metadata.name on nodes", "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b&resourceVersion=43936&watch=true", "nodes",
			q{RV: "43936", Node: "node-b"}},
		{"metadata.name on configmaps is no node", "/api/v1/namespaces/kube-system/configmaps?fieldSelector=metadata.name%3Dkube-proxy&watch=true", "configmaps", q{}},
		{"spec.nodeName beats metadata.name", "/api/v1/nodes?fieldSelector=metadata.name%3Da%2Cspec.nodeName%3Db", "nodes", q{Node: "b"}},
		{"backslash-escaped selector value", `/api/v1/pods?fieldSelector=spec.nodeName%3Dweird%5C%2Cnode%2Cstatus.phase%3DRunning`, "pods", q{Node: "weird,node"}},
		{"empty selector value", "/api/v1/pods?fieldSelector=spec.nodeName%3D", "pods", q{}},
		{"plus is a space", "/api/v1/pods?fieldSelector=spec.nodeName%3Da+b", "pods", q{Node: "a b"}},
		{"percent-escaped everything", "/api/v1/pods?%72esourceVersion=%31%32&resourceVersionMatch=%4EotOlderThan&limit=%35", "pods",
			q{RV: "12", RVMatch: "NotOlderThan", Limit: 5}},
		{"broken escapes are ignored", "/api/v1/pods?resourceVersion=%zz&limit=%5&fieldSelector=spec.nodeName%3Dn%", "pods", q{}},
		{"semicolons drop the pair", "/api/v1/pods?resourceVersion=1;x=2&limit=3", "pods", q{Limit: 3}},
		{"continue token", "/api/v1/pods?continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ%3D%3D&limit=500", "pods", q{Continue: true, Limit: 500}},
		{"empty continue is a first page", "/api/v1/pods?continue=&limit=500", "pods", q{Limit: 500}},
		{"sendInitialEvents true", "/api/v1/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", "pods",
			q{SIE: true, RVMatch: "NotOlderThan"}},
		{"sendInitialEvents variants", "/api/v1/pods?sendInitialEvents=1", "pods", q{SIE: true}},
		{"sendInitialEvents false", "/api/v1/pods?sendInitialEvents=false", "pods", q{}},
		{"sendInitialEvents garbage", "/api/v1/pods?sendInitialEvents=yes", "pods", q{}},
		{"exact match", "/api/v1/pods?resourceVersion=4711&resourceVersionMatch=Exact", "pods", q{RV: "4711", RVMatch: "Exact"}},
		{"first value wins", "/api/v1/pods?resourceVersion=1&resourceVersion=2&limit=7&limit=8", "pods", q{RV: "1", Limit: 7}},
		{"a broken first value does not hide the second", "/api/v1/pods?resourceVersion=%zz&resourceVersion=2", "pods", q{RV: "2"}},
		{"bad limits", "/api/v1/pods?limit=-1", "pods", q{}},
		{"huge limit", "/api/v1/pods?limit=99999999999999999999", "pods", q{}},
		{"key without value", "/api/v1/pods?resourceVersion&limit=", "pods", q{}},
		{"fragment", "/api/v1/pods?limit=5#resourceVersion=9", "pods", q{Limit: 5}},
		{"empty pairs", "/api/v1/pods?&&limit=5&&", "pods", q{Limit: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Query
			scratch := make([]byte, 0, 1) // force growth on escaped values
			parseQuery(&got, []byte(tt.uri), []byte(tt.resource), &scratch)
			g := q{string(got.ResourceVersion), string(got.ResourceVersionMatch), string(got.FieldSelectorNode),
				got.Continue, got.SendInitialEvents, got.Limit}
			if g != tt.want {
				t.Errorf("parseQuery(%q)\n got %+v\nwant %+v", tt.uri, g, tt.want)
			}
		})
	}
}

// TestParseQueryNoAllocs: nothing escaped means nothing copied.
func TestParseQueryNoAllocs(t *testing.T) {
	uri := []byte("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=500&resourceVersion=0")
	var q Query
	scratch := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		scratch = scratch[:0]
		parseQuery(&q, uri, []byte("pods"), &scratch)
	})
	if allocs != 0 || string(q.FieldSelectorNode) != "node-a" {
		t.Errorf("%.0f allocs, node %q", allocs, q.FieldSelectorNode)
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want string // RFC 3339 for time.Parse, or "" for 0
	}{
		{"2026-03-14T09:26:53.589793Z", "2026-03-14T09:26:53.589793Z"},
		{"2026-03-14T09:26:53Z", "2026-03-14T09:26:53Z"},
		{"2026-03-14T09:26:53.1Z", "2026-03-14T09:26:53.1Z"},
		{"2026-03-14T09:26:53.123456789Z", "2026-03-14T09:26:53.123456789Z"},
		{"2026-03-14T09:26:53.1234567891234Z", "2026-03-14T09:26:53.123456789Z"}, // extra digits truncated
		{"2026-03-14T09:26:53+09:00", "2026-03-14T09:26:53+09:00"},
		{"2026-03-14T09:26:53.5-07:30", "2026-03-14T09:26:53.5-07:30"},
		{"2026-03-14t09:26:53z", "2026-03-14T09:26:53Z"},
		{"2024-02-29T00:00:00Z", "2024-02-29T00:00:00Z"},
		{"2000-02-29T23:59:59Z", "2000-02-29T23:59:59Z"},
		{"1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"},
		{"1969-12-31T23:59:59.999999999Z", "1969-12-31T23:59:59.999999999Z"},
		{"1700-01-01T00:00:00Z", "1700-01-01T00:00:00Z"},
		{"2262-04-11T23:47:16Z", "2262-04-11T23:47:16Z"},
		{"2262-04-11T23:47:17Z", ""}, // beyond int64 nanoseconds
		{"1600-01-01T00:00:00Z", ""},
		{"2023-02-29T00:00:00Z", ""},
		{"2026-13-01T00:00:00Z", ""},
		{"2026-00-01T00:00:00Z", ""},
		{"2026-01-00T00:00:00Z", ""},
		{"2026-04-31T00:00:00Z", ""},
		{"2026-01-01T24:00:00Z", ""},
		{"2026-01-01T00:60:00Z", ""},
		{"2026-01-01T00:00:60Z", ""},
		{"2026-01-01T00:00:00", ""},
		{"2026-01-01T00:00:00.Z", ""},
		{"2026-01-01T00:00:00+0900", ""},
		{"2026-01-01T00:00:00+24:00", ""},
		{"2026-01-01 00:00:00Z", ""},
		{"2026-01-01T00:00:00Zjunk", ""},
		{"+026-01-01T00:00:00Z", ""},
		{"", ""},
		{"2026", ""},
	}
	for _, tt := range tests {
		got := parseTimestamp([]byte(tt.in))
		var want int64
		if tt.want != "" {
			tm, err := time.Parse(time.RFC3339Nano, tt.want)
			if err != nil {
				t.Fatal(err)
			}
			want = tm.UnixNano()
		}
		if got != want {
			t.Errorf("parseTimestamp(%q) = %d, want %d (%s)", tt.in, got, want, tt.want)
		}
	}
}
