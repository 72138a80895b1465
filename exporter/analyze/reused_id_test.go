package analyze

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herd-k8s/herd/exporter/config"
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

// TestRoleTotalsAfterEviction reproduces issue 16.9: with more instances
// than accounting.maxInstances the ledger evicts the least recently seen,
// and the ROLE table, which summed the instances still held, showed a
// fraction of the requests while the notes said per-client totals are
// exact. The totals come from the per-client counters now.
func TestRoleTotalsAfterEviction(t *testing.T) {
	cfg := config.Default()
	cfg.Accounting.MaxInstances = 100
	var b strings.Builder
	const nodes, per = 1000, 5
	for n := 0; n < nodes; n++ {
		for i := 0; i < per; i++ {
			fmt.Fprintf(&b, `{"auditID":"id-%d-%d","stage":"ResponseComplete","verb":"list","requestURI":"/api/v1/pods?resourceVersion=0",`+
				`"user":{"username":"system:node:node-%d"},"userAgent":"kubelet/v1.36.3","objectRef":{"resource":"pods"},"responseStatus":{"code":200},`+
				`"requestReceivedTimestamp":"2026-11-23T08:%02d:%02d.%06dZ","stageTimestamp":"2026-11-23T08:%02d:%02d.%06dZ"}`+"\n",
				n, i, n, i, n%60, n, i, n%60, n)
		}
	}
	r, _ := analyzeString(t, Options{Config: cfg}, "many.log", b.String())
	var kubelet RoleTotals
	for _, rt := range r.Roles {
		if rt.Role == "kubelet" {
			kubelet = rt
		}
	}
	if kubelet.Requests != nodes*per || kubelet.Relists != nodes*per {
		t.Errorf("kubelet totals %+v, want %d requests and relists", kubelet, nodes*per)
	}
	if kubelet.Instances > 100 {
		t.Errorf("%d instances held, max 100", kubelet.Instances)
	}
	if !strings.Contains(strings.Join(r.Notes, "\n"), "evicted") {
		t.Errorf("notes %q do not mention the eviction", r.Notes)
	}
}

// TestDocumentMemory reproduces issue 16.9's memory item on a smaller
// scale: a pretty-printed EventList read whole used to peak at about 2.5
// times its size (io.ReadAll's growth). Read from a file, the buffer is
// sized from the file (or its gzip trailer) once: the heap grows by little
// more than the document.
func TestDocumentMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 48 MiB file")
	}
	path := filepath.Join(t.TempDir(), "big.json")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("{\n  \"kind\": \"EventList\",\n  \"apiVersion\": \"audit.k8s.io/v1\",\n  \"items\": [\n")
	pad := strings.Repeat("x", 4000)
	n := 0
	for size := 0; size < 48<<20; n++ {
		if n > 0 {
			w.WriteString(",\n")
		}
		line := fmt.Sprintf(`    {"auditID":"id-%d","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"objectRef":{"resource":"pods"},"requestObject":{"pad":%q},"stageTimestamp":"2026-11-23T08:00:00Z"}`, n, pad)
		w.WriteString(line)
		size += len(line) + 2
	}
	w.WriteString("\n  ]\n}\n")
	w.Flush()
	f.Close()
	st, _ := os.Stat(path)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	a, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.ReadFile(path)
	close(done)
	r := a.Report()
	if r.Events.Accounted != n || r.Inputs[0].Mode != ModeDocument {
		t.Fatalf("%+v %+v", r.Events, r.Inputs)
	}
	if grew := peak.Load() - before; grew > uint64(st.Size())*3/2 {
		t.Errorf("heap grew by %d MiB reading a %d MiB document", grew>>20, st.Size()>>20)
	}
}
