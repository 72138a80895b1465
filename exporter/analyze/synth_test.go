package analyze

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// t0 is when the synthetic scenarios start.
var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

// req is one request of a synthetic scenario. events renders it as the audit
// events kube-apiserver's log backend writes for it (RequestReceived, and
// ResponseStarted for watches, then ResponseComplete), so tests see what a
// real log holds, not what the decoder happens to need.
type req struct {
	id       int
	user     string
	groups   []string
	ua       string
	ip       string
	verb     string
	uri      string
	resource string
	group    string
	version  string
	code     int
	message  string // responseStatus.message, for failures
	reason   string
	at       time.Duration // after t0
}

const (
	kubeletUA = "kubelet/v1.36.3 (linux/amd64) kubernetes/6f5e2c4"
	ciliumUA  = "cilium-agent/v1.18.2 (linux/amd64) kubernetes/abcdef"
	tooLarge  = "Timeout: Too large resource version: 191700552, current: 187970861"
)

func auditID(n int) string { return fmt.Sprintf("5f0c6a1e-0000-4000-8000-%012d", n) }

func (r req) events() []string {
	stamp := func(d time.Duration) string { return t0.Add(d).Format("2006-01-02T15:04:05.000000Z") }
	obj := map[string]any{"resource": r.resource, "apiVersion": r.version}
	if r.group != "" {
		obj["apiGroup"] = r.group
	}
	base := func(stage string, d time.Duration) map[string]any {
		return map[string]any{
			"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
			"auditID": auditID(r.id), "stage": stage, "requestURI": r.uri, "verb": r.verb,
			"user":      map[string]any{"username": r.user, "groups": r.groups},
			"sourceIPs": []string{r.ip}, "userAgent": r.ua, "objectRef": obj,
			"requestReceivedTimestamp": stamp(r.at), "stageTimestamp": stamp(d),
		}
	}
	status := map[string]any{"metadata": map[string]any{}, "code": r.code}
	if r.code >= 400 {
		status["status"], status["message"], status["reason"] = "Failure", r.message, r.reason
	}
	var out []map[string]any
	out = append(out, base("RequestReceived", 0))
	out[0]["stageTimestamp"] = stamp(r.at)
	if r.verb == "watch" {
		s := base("ResponseStarted", r.at+time.Millisecond)
		s["responseStatus"] = status
		out = append(out, s)
	}
	c := base("ResponseComplete", r.at+20*time.Millisecond)
	c["responseStatus"] = status
	c["annotations"] = map[string]string{"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
	out = append(out, c)
	lines := make([]string, len(out))
	for i, m := range out {
		b, err := json.Marshal(m)
		if err != nil {
			panic(err)
		}
		lines[i] = string(b)
	}
	return lines
}

var nodeGroups = []string{"system:nodes", "system:authenticated"}

// scenario is the synthetic incident the analyze tests read:
//   - system:node:node-7's kubelet relists pods 12 times, every 30 s, with
//     consistent LISTs (incident 002's relist storm, one node);
//   - system:node:old-worker-7, a kubelet left on a removed node (incident
//     000), gets 504 "Too large resource version" on runtimeclasses and
//     csidrivers, 3 each, alternately from 10.0.9.7 and 10.0.9.8;
//   - the kubelets of node-1..3 relist pods once and create 5, 3 and 2
//     TokenReviews (incident 004);
//   - cilium on every node lists endpointslices once from the cache, and
//     node-1's kubelet re-watches nodes (not a relist).
func scenario() []req {
	var rs []req
	id := 0
	add := func(r req) {
		id++
		r.id = id
		if r.code == 0 {
			r.code = 200
		}
		if r.version == "" {
			r.version = "v1"
		}
		rs = append(rs, r)
	}
	kubelet := func(node, ip string) req {
		return req{user: "system:node:" + node, groups: nodeGroups, ua: kubeletUA, ip: ip}
	}
	for i := 1; i <= 3; i++ {
		r := kubelet(fmt.Sprintf("node-%d", i), fmt.Sprintf("10.0.0.%d", i))
		r.verb, r.resource, r.at = "list", "pods", time.Duration(i)*time.Second
		r.uri = fmt.Sprintf("/api/v1/pods?fieldSelector=spec.nodeName%%3Dnode-%d&limit=500&resourceVersion=0", i)
		add(r)
		cil := req{user: "system:serviceaccount:kube-system:cilium", groups: []string{"system:serviceaccounts"},
			ua: ciliumUA, ip: r.ip, verb: "list", resource: "endpointslices", group: "discovery.k8s.io",
			uri: "/apis/discovery.k8s.io/v1/endpointslices?limit=500&resourceVersion=0", at: r.at + time.Second}
		add(cil)
	}
	w := kubelet("node-1", "10.0.0.1")
	w.verb, w.resource, w.at = "watch", "nodes", 5*time.Second
	w.uri = "/api/v1/nodes?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dnode-1&resourceVersion=1234&timeout=7m3s&timeoutSeconds=423&watch=true"
	add(w)
	for i := 0; i < 12; i++ {
		r := kubelet("node-7", "10.0.0.77")
		r.verb, r.resource, r.at = "list", "pods", time.Minute+time.Duration(i)*30*time.Second
		r.uri = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7&limit=500"
		add(r)
	}
	for i := 0; i < 6; i++ {
		r := kubelet("old-worker-7", []string{"10.0.9.7", "10.0.9.8"}[i%2])
		r.verb, r.code, r.message, r.reason = "list", 504, tooLarge, "Timeout"
		r.at = 2*time.Minute + time.Duration(i)*40*time.Second
		if i < 3 {
			r.resource, r.group = "runtimeclasses", "node.k8s.io"
			r.uri = "/apis/node.k8s.io/v1/runtimeclasses?limit=500&resourceVersion=191700552"
		} else {
			r.resource, r.group = "csidrivers", "storage.k8s.io"
			r.uri = "/apis/storage.k8s.io/v1/csidrivers?limit=500&resourceVersion=191700552"
		}
		add(r)
	}
	for i, n := range []int{5, 3, 2} {
		for j := 0; j < n; j++ {
			r := kubelet(fmt.Sprintf("node-%d", i+1), fmt.Sprintf("10.0.0.%d", i+1))
			r.verb, r.resource, r.group, r.code = "create", "tokenreviews", "authentication.k8s.io", 201
			r.uri = "/apis/authentication.k8s.io/v1/tokenreviews"
			r.at = 3*time.Minute + time.Duration(i*10+j)*time.Second
			add(r)
		}
	}
	return rs
}

// scenarioLog renders the scenario as an audit log, events in the order
// the apiserver writes them (by time).
func scenarioLog() string {
	rs := scenario()
	slices.SortStableFunc(rs, func(x, y req) int { return cmp.Compare(x.at, y.at) })
	var b strings.Builder
	for _, r := range rs {
		for _, l := range r.events() {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
