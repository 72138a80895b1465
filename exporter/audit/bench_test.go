package audit

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/valyala/fastjson"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"
)

// benchEvent renders one realistic Metadata-level event of a node-side
// client, as kube-apiserver 1.36 writes it into a webhook EventList (items
// carry no kind/apiVersion). i varies the auditID, node, IPs and RVs.
func benchEvent(i int) string {
	node := fmt.Sprintf("ip-10-0-%d-%d.eu-west-1.compute.internal", i%64, i%251)
	ip := fmt.Sprintf("10.0.%d.%d", i%64, i%251)
	rv := 48_000_000 + i*7
	id := fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", i*2654435761%(1<<32), i%65536, i%4096, (i*7)%4096, i*11400714819)
	ts := fmt.Sprintf("2026-03-14T09:%02d:%02d.%06dZ", (i/60)%60, i%60, (i*7919)%1_000_000)
	var stage, verb, uri, user, ua, ref string
	groups := `["system:nodes","system:authenticated"]`
	reason := ``
	switch i % 6 {
	case 0: // kubelet relists its pods (watch cache, filtered)
		stage, verb = "ResponseComplete", "list"
		uri = fmt.Sprintf("/api/v1/pods?fieldSelector=spec.nodeName%%3D%s&limit=500&resourceVersion=0", node)
		user, ua = "system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
		ref = `{"resource":"pods","apiVersion":"v1"}`
	case 1: // kubelet re-watches its pods
		stage, verb = "ResponseStarted", "watch"
		uri = fmt.Sprintf("/api/v1/pods?allowWatchBookmarks=true&fieldSelector=spec.nodeName%%3D%s&resourceVersion=%d&timeoutSeconds=376&watch=true", node, rv)
		user, ua = "system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
		ref = `{"resource":"pods","apiVersion":"v1"}`
	case 2: // kube-proxy lists endpointslices
		stage, verb = "ResponseComplete", "list"
		uri = "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name&limit=500&resourceVersion=0"
		user, ua = "system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
		groups = `["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]`
		ref = `{"resource":"endpointslices","apiGroup":"discovery.k8s.io","apiVersion":"v1"}`
		reason = `RBAC: allowed by ClusterRoleBinding \"kubeadm:node-proxier\" of ClusterRole \"system:node-proxier\" to ServiceAccount \"kube-proxy/kube-system\"`
	case 3: // kube-proxy watches services (WatchList)
		stage, verb = "ResponseStarted", "watch"
		uri = "/api/v1/services?allowWatchBookmarks=true&labelSelector=%21service.kubernetes.io%2Fheadless&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&timeoutSeconds=512&watch=true"
		user, ua = "system:serviceaccount:kube-system:kube-proxy", "kube-proxy/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
		groups = `["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]`
		ref = `{"resource":"services","apiVersion":"v1"}`
		reason = `RBAC: allowed by ClusterRoleBinding \"kubeadm:node-proxier\" of ClusterRole \"system:node-proxier\" to ServiceAccount \"kube-proxy/kube-system\"`
	case 4: // cilium-agent lists its CiliumNode
		stage, verb = "ResponseComplete", "list"
		uri = fmt.Sprintf("/apis/cilium.io/v2/ciliumnodes?fieldSelector=metadata.name%%3D%s&limit=500", node)
		user, ua = "system:serviceaccount:kube-system:cilium", "cilium-agent/1.18.2 go/go1.24.6 (linux/amd64)"
		groups = `["system:serviceaccounts","system:serviceaccounts:kube-system","system:authenticated"]`
		ref = `{"resource":"ciliumnodes","apiGroup":"cilium.io","apiVersion":"v2"}`
		reason = `RBAC: allowed by ClusterRoleBinding \"cilium\" of ClusterRole \"cilium\" to ServiceAccount \"cilium/kube-system\"`
	default: // kubelet stuck on a too-large RV
		stage, verb = "ResponseComplete", "list"
		uri = fmt.Sprintf("/apis/storage.k8s.io/v1/csidrivers?limit=500&resourceVersion=%d", rv+900_000_000)
		user, ua = "system:node:"+node, "kubelet/v1.36.3 (linux/amd64) kubernetes/6a1f4c3"
		ref = `{"resource":"csidrivers","apiGroup":"storage.k8s.io","apiVersion":"v1"}`
		return fmt.Sprintf(`{"level":"Metadata","auditID":%q,"stage":%q,"requestURI":%q,"verb":%q,"user":{"username":%q,"groups":%s,"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=5ae1c3d28f0b7e2a64f1b09c7d3e8a4f2b6c1d0e9f8a7b6c5d4e3f2a1b0c9d8e"]}},"sourceIPs":[%q],"userAgent":%q,"objectRef":%s,"responseStatus":{"metadata":{},"status":"Failure","message":"Timeout: Too large resource version: %d, current: %d","reason":"Timeout","details":{"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1},"code":504},"requestReceivedTimestamp":%q,"stageTimestamp":%q,"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":""}}`,
			id, stage, uri, verb, user, groups, ip, ua, ref, rv+900_000_000, rv, ts, ts)
	}
	return fmt.Sprintf(`{"level":"Metadata","auditID":%q,"stage":%q,"requestURI":%q,"verb":%q,"user":{"username":%q,"groups":%s,"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=5ae1c3d28f0b7e2a64f1b09c7d3e8a4f2b6c1d0e9f8a7b6c5d4e3f2a1b0c9d8e"]}},"sourceIPs":[%q],"userAgent":%q,"objectRef":%s,"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":%q,"stageTimestamp":%q,"annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"%s"}}`,
		id, stage, uri, verb, user, groups, ip, ua, ref, ts, ts, reason)
}

// benchBatch is an EventList of n events, as the webhook backend sends
// (its default batch size is 400).
func benchBatch(n int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(benchEvent(i))
	}
	sb.WriteString(`]}`)
	// kube-apiserver's JSON encoder escapes '&' (and '<', '>') as in HTML.
	return []byte(strings.ReplaceAll(sb.String(), "&", `\u0026`))
}

var sink int

// readFields touches what the accounting reads, so nothing is optimised away.
func readFields(ev *Event) {
	sink += len(ev.AuditID) + int(ev.Stage) + len(ev.Verb) + len(ev.User) + len(ev.UserAgent) +
		len(ev.SourceIP) + len(ev.Resource) + len(ev.APIGroup) + int(ev.Code) +
		len(ev.Query.ResourceVersion) + len(ev.Query.FieldSelectorNode) + int(ev.Query.Limit) +
		int(ev.StageTimestampNanos&1)
	if ev.TooLargeResourceVersion || ev.Query.Continue || ev.Query.SendInitialEvents {
		sink++
	}
}

func BenchmarkDecodeBatch400(b *testing.B) {
	body := benchBatch(400)
	var d Decoder
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		res, err := d.DecodeBody(body, readFields)
		if err != nil || res.Events != 400 {
			b.Fatalf("DecodeBody = %+v, %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N*400)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkBaselineEncodingJSON400(b *testing.B) {
	body := benchBatch(400)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		var list auditv1.EventList
		if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 400 {
			b.Fatalf("Unmarshal: %d items, %v", len(list.Items), err)
		}
		for i := range list.Items {
			ev := &list.Items[i]
			sink += len(ev.AuditID) + len(ev.Verb) + len(ev.User.Username) + len(ev.RequestURI)
		}
	}
	b.ReportMetric(float64(b.N*400)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFastjsonParseOnly400 is fastjson's parse of the same body into
// its tree, with no field lookups and no per-event boundaries: a floor for a
// fastjson-based decoder, which needs both on top (see Decoder).
func BenchmarkFastjsonParseOnly400(b *testing.B) {
	body := benchBatch(400)
	var p fastjson.Parser
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		v, err := p.ParseBytes(body)
		if err != nil || len(v.GetArray("items")) != 400 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*400)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkScanBatch400 is the validating scan alone, what finding the
// events' boundaries and checking the syntax costs.
func BenchmarkScanBatch400(b *testing.B) {
	body := benchBatch(400)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := skipValue(body, 0, 0); err != nil {
			b.Fatal(err.msg)
		}
	}
}

// BenchmarkDecodeLine is the file tailer's path: one event per call.
func BenchmarkDecodeLine(b *testing.B) {
	lines := make([][]byte, 400)
	for i := range lines {
		lines[i] = []byte(strings.ReplaceAll(benchEvent(i), "&", `\u0026`))
	}
	var d Decoder
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := d.DecodeLine(lines[i%400], readFields); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
