package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// auditLine is one ResponseComplete event as kube-apiserver's log backend
// writes it.
func auditLine(n int, user, ip, verb, uri, resource, group string, code int, message string, sec int) string {
	status := fmt.Sprintf(`{"metadata":{},"code":%d}`, code)
	if message != "" {
		status = fmt.Sprintf(`{"metadata":{},"status":"Failure","message":%q,"reason":"Timeout","code":%d}`, message, code)
	}
	obj := fmt.Sprintf(`{"resource":%q,"apiVersion":"v1"}`, resource)
	if group != "" {
		obj = fmt.Sprintf(`{"resource":%q,"apiGroup":%q,"apiVersion":"v1"}`, resource, group)
	}
	ts := fmt.Sprintf("2026-11-23T08:%02d:%02d.000000Z", sec/60, sec%60)
	return fmt.Sprintf(`{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"00000000-0000-4000-8000-%012d",`+
		`"stage":"ResponseComplete","requestURI":%q,"verb":%q,"user":{"username":%q,"groups":["system:nodes","system:authenticated"]},`+
		`"sourceIPs":[%q],"userAgent":"kubelet/v1.36.3 (linux/amd64) kubernetes/abc","objectRef":%s,"responseStatus":%s,`+
		`"requestReceivedTimestamp":%q,"stageTimestamp":%q}`, n, uri, verb, user, ip, obj, status, ts, ts)
}

// incidentLog: node-7's kubelet relists pods 8 times; old-worker-7's
// kubelet loops on too-large resourceVersions from two IPs.
func incidentLog() string {
	var lines []string
	n := 0
	for i := 0; i < 8; i++ {
		n++
		lines = append(lines, auditLine(n, "system:node:node-7", "10.0.0.7", "list",
			"/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7&limit=500", "pods", "", 200, "", 60+i*20))
	}
	for i := 0; i < 4; i++ {
		n++
		lines = append(lines, auditLine(n, "system:node:old-worker-7", []string{"10.0.9.7", "10.0.9.8"}[i%2], "list",
			"/apis/node.k8s.io/v1/runtimeclasses?limit=500&resourceVersion=191700552", "runtimeclasses", "node.k8s.io", 504,
			"Timeout: Too large resource version: 191700552, current: 187970861", 90+i*30))
	}
	return strings.Join(lines, "\n") + "\n"
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAnalyze(t *testing.T) {
	log := writeFile(t, "audit.log", incidentLog())
	bad := writeFile(t, "bad.log", incidentLog()+"not json\n")
	empty := writeFile(t, "empty.log", "")
	garbage := writeFile(t, "garbage.log", "not json\nnor this\n")
	badConfig := writeFile(t, "herd.yaml", "accounting:\n  windw: 5m\n")
	missing := filepath.Join(t.TempDir(), "missing.log")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantFirst  []string // in the first 10 lines of stdout
		wantStderr []string
	}{
		{name: "report", args: []string{"analyze", log}, wantFirst: []string{
			"herd analyze: " + log,
			"events: 12 read, 12 accounted, 0 duplicate, 0 malformed, 0 oversized",
			"relisting:    kubelet system:node:node-7 relisted pods 8 times",
			"too-large RV: system:node:old-worker-7: 4 errors (runtimeclasses) from 10.0.9.7,10.0.9.8",
			"ghost?:       system:node:old-worker-7: 2 source IPs (3 changes), 4 too-large-RV errors",
			"verify with kubectl get node old-worker-7",
		}},
		{name: "same file twice", args: []string{"analyze", log, log}, wantFirst: []string{"events: 24 read, 12 accounted, 12 duplicate"}},
		{name: "bad line", args: []string{"analyze", bad}, wantFirst: []string{"1 malformed"},
			wantStderr: []string{bad + ":13: not JSON: ", "herd analyze: skipped 1 malformed or oversized lines/events"}},
		{name: "window and top", args: []string{"analyze", "--window=all", "--top=1", log},
			wantFirst: []string{"window: the whole input (--window=all)"}},
		{name: "missing file", args: []string{"analyze", log, missing}, wantCode: 2,
			wantStderr: []string{"herd analyze: audit log " + missing + ": stat " + missing + ": no such file or directory\n"}},
		{name: "no file", args: []string{"analyze"}, wantCode: 2, wantStderr: []string{"required argument 'file' not provided"}},
		{name: "bad output", args: []string{"analyze", "--output=yaml", log}, wantCode: 2, wantStderr: []string{"enum value must be one of table,json, got 'yaml'"}},
		{name: "bad window", args: []string{"analyze", "--window=5", log}, wantCode: 2, wantStderr: []string{`herd analyze: --window "5": want a duration such as 10m or 1h, or all`}},
		{name: "short window", args: []string{"analyze", "--window=30s", log}, wantCode: 2, wantStderr: []string{"herd analyze: --window 30s: must be at least 1m, or all"}},
		{name: "bad top", args: []string{"analyze", "--top=0", log}, wantCode: 2, wantStderr: []string{"herd analyze: --top 0: must be 1..10000"}},
		{name: "bad config", args: []string{"analyze", "--config", badConfig, log}, wantCode: 2, wantStderr: []string{"herd analyze: config " + badConfig, "windw"}},
		{name: "empty file", args: []string{"analyze", empty}, wantCode: 1, wantFirst: []string{"events: 0 read"},
			wantStderr: []string{"herd analyze: no audit events could be read from " + empty}},
		{name: "nothing readable", args: []string{"analyze", garbage}, wantCode: 1,
			wantStderr: []string{garbage + ":1: not JSON", garbage + ":2: not JSON", "no audit events could be read"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code = %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			head := strings.Join(strings.SplitN(stdout.String(), "\n", 11)[:min(10, strings.Count(stdout.String(), "\n"))], "\n")
			for _, want := range tc.wantFirst {
				if !strings.Contains(head, want) {
					t.Errorf("first lines lack %q:\n%s", want, head)
				}
			}
			for _, want := range tc.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
			if tc.wantCode == 2 && stdout.Len() > 0 && !strings.Contains(strings.Join(tc.args, " "), "--help") {
				t.Errorf("a usage error printed a report:\n%s", stdout.String())
			}
		})
	}
}

func TestAnalyzeJSON(t *testing.T) {
	log := writeFile(t, "audit.log", incidentLog())
	var stdout, stderr bytes.Buffer
	if code := run([]string{"analyze", "-o", "json", log}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var r struct {
		Events    struct{ Read, Accounted int }
		Relisting struct {
			Rows []struct {
				Identity string
				Relists  int
			}
		}
		TooLarge struct {
			Errors int
			Rows   []struct {
				Identity  string
				SourceIPs []string
			}
		} `json:"tooLargeResourceVersion"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	if r.Events.Read != 12 || r.Relisting.Rows[0].Identity != "system:node:node-7" || r.Relisting.Rows[0].Relists != 8 ||
		r.TooLarge.Errors != 4 || r.TooLarge.Rows[0].Identity != "system:node:old-worker-7" || len(r.TooLarge.Rows[0].SourceIPs) != 2 {
		t.Errorf("report = %+v", r)
	}
}

// TestAnalyzeStdin reads "-" from the process's standard input.
func TestAnalyzeStdin(t *testing.T) {
	f, err := os.Open(writeFile(t, "stdin", incidentLog()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	saved := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = saved }()
	var stdout, stderr bytes.Buffer
	if code := run([]string{"analyze", "-"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "herd analyze: stdin\n") || !strings.Contains(stdout.String(), "relisted pods 8 times") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
}

// TestAnalyzeConfigRules: --config's rules classify clients as the exporter
// would, so a custom CNI's relists are listed as that CNI.
func TestAnalyzeConfigRules(t *testing.T) {
	var lines []string
	for i := 0; i < 3; i++ {
		lines = append(lines, auditLine(i+1, "system:serviceaccount:kube-system:weave-net", "10.0.0.5", "list",
			"/api/v1/pods?limit=500", "pods", "", 200, "", 60+i))
	}
	log := writeFile(t, "audit.log", strings.Join(lines, "\n")+"\n")
	cfg := writeFile(t, "herd.yaml", "rules:\n- role: cni\n  client: weave\n  serviceAccount: kube-system:weave-net\naccounting:\n  relistThreshold: 2\n")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"analyze", "--config", cfg, log}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{
		"relisting:    weave system:serviceaccount:kube-system:weave-net relisted pods 3 times",
		"TOP RELISTING INSTANCES: ≥2 relists of one resource",
		"weave   system:…kube-system:weave-net (ip 10.0.0.5)  pods",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
}
