package analyze

import (
	"fmt"
	"strings"
	"testing"
)

// TestReusedAuditID reproduces issue 16.2 offline: a kubelet that sends the
// same Audit-ID header on every request (the apiserver then uses it as the
// auditID of each) makes 8 distinct WatchList relists, each audited at
// ResponseStarted and ResponseComplete, and 600 LISTs. herd analyze counts
// 8 relists and 600 LISTs, not 1 each, while a log read twice is still
// recognised as duplicates (the request's own timestamp is in the key).
func TestReusedAuditID(t *testing.T) {
	var lines []string
	event := func(stage, verb, uri, received, stamp string) string {
		return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"constant-audit-id","stage":%q,"requestURI":%q,"verb":%q,`+
			`"user":{"username":"system:node:node-1","groups":["system:nodes","system:authenticated"]},"sourceIPs":["10.0.0.1"],`+
			`"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/herdsim","objectRef":{"resource":"pods","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},`+
			`"requestReceivedTimestamp":%q,"stageTimestamp":%q}`, stage, uri, verb, received, stamp)
	}
	for i := 0; i < 8; i++ {
		rr := fmt.Sprintf("2026-11-23T08:%02d:00.000100Z", i)
		uri := "/api/v1/pods?allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dnode-1&resourceVersionMatch=NotOlderThan&sendInitialEvents=true&watch=true"
		lines = append(lines, event("ResponseStarted", "watch", uri, rr, fmt.Sprintf("2026-11-23T08:%02d:00.000200Z", i)),
			event("ResponseComplete", "watch", uri, rr, fmt.Sprintf("2026-11-23T08:%02d:09.000000Z", i)))
	}
	for i := 0; i < 600; i++ {
		rr := fmt.Sprintf("2026-11-23T09:%02d:%02d.%06dZ", i/60%60, i%60, i)
		lines = append(lines, event("ResponseComplete", "list", "/api/v1/configmaps?resourceVersion=0", rr, rr))
	}
	input := strings.Join(lines, "\n") + "\n"
	r, _ := analyzeString(t, Options{}, "reused.log", input)
	if r.Events.Accounted != 616 || r.Events.Duplicate != 0 {
		t.Fatalf("events %+v, want 616 accounted, 0 duplicate", r.Events)
	}
	var relists, requests uint64
	for _, rt := range r.Roles {
		if rt.Role == "kubelet" {
			relists, requests = rt.Relists, rt.Requests
		}
	}
	if relists != 608 || requests != 608 {
		t.Errorf("kubelet: %d relists, %d requests; want 608 and 608 (8 WatchList relists + 600 LISTs)", relists, requests)
	}
	// The same log twice: the second copy is all duplicates.
	r, _ = analyzeString(t, Options{}, "twice.log", input+input)
	if r.Events.Accounted != 616 || r.Events.Duplicate != 616 {
		t.Errorf("log read twice: %+v, want 616 accounted and 616 duplicate", r.Events)
	}
}
