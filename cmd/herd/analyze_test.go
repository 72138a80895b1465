package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/test/herdtest"
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

func TestAnalyze(t *testing.T) {
	log := herdtest.WriteTemp(t, "audit.log", incidentLog())
	bad := herdtest.WriteTemp(t, "bad.log", incidentLog()+"not json\n")
	empty := herdtest.WriteTemp(t, "empty.log", "")
	garbage := herdtest.WriteTemp(t, "garbage.log", "not json\nnor this\n")
	badConfig := herdtest.WriteTemp(t, "herd.yaml", "accounting:\n  windw: 5m\n")
	missing := filepath.Join(t.TempDir(), "missing.log")
	notAPF := herdtest.WriteTemp(t, "apf.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
	noLevels := herdtest.WriteTemp(t, "apf.yaml", "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata: {name: x}\nspec: {priorityLevelConfiguration: {name: global-default}, matchingPrecedence: 1000}\n")
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
		// The stampede forecast's flags: exact errors, nothing read.
		{name: "objects without =", args: []string{"analyze", "--objects", "pods", "--object-bytes", "pods=1", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --objects \"pods\": want RESOURCE=COUNT, e.g. pods=2000\n"}},
		{name: "objects not a number", args: []string{"analyze", "--objects", "pods=-3", "--object-bytes", "pods=1", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --objects \"pods=-3\": COUNT must be a whole number ≥ 0\n"}},
		{name: "objects bad resource", args: []string{"analyze", "--objects", "Pods=3", "--object-bytes", "pods=1", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --objects \"Pods=3\": \"Pods\" is not a resource (plural, or plural.group as herd labels resources: endpointslices.discovery.k8s.io)\n"}},
		{name: "objects twice", args: []string{"analyze", "--objects", "pods=3", "--objects", "pods=4", "--object-bytes", "pods=1", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --objects pods: given twice\n"}},
		{name: "object bytes alone", args: []string{"analyze", "--objects", "nodes=3", "--object-bytes", "pods=10800", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --object-bytes pods=10800: no --objects pods=COUNT to multiply it by\n"}},
		{name: "objects without bytes", args: []string{"analyze", "--objects", "pods=3", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: the forecast needs --objects and --object-bytes of at least one resource\n"}},
		{name: "sizes without memory", args: []string{"analyze", "--objects", "pods=3", "--object-bytes", "pods=10800", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --objects and --object-bytes need --apiserver-memory (the apiserver's memory now: where a stampede starts from)\n"}},
		{name: "bad memory", args: []string{"analyze", "--objects", "pods=3", "--object-bytes", "pods=10800", "--apiserver-memory", "lots", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --apiserver-memory \"lots\": want bytes, e.g. 524288000 or 500Mi\n"}},
		{name: "bad memory limit", args: []string{"analyze", "--objects", "pods=3", "--object-bytes", "pods=10800", "--apiserver-memory", "1Gi", "--apiserver-memory-limit=-1", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --apiserver-memory-limit \"-1\": want bytes, e.g. 524288000 or 500Mi\n"}},
		{name: "prometheus and flags", args: []string{"analyze", "--prometheus", "http://prometheus:9090", "--objects", "pods=3", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --prometheus reads the sizes and memory: leave out --objects, --object-bytes and --apiserver-memory\n"}},
		{name: "bad prometheus", args: []string{"analyze", "--prometheus", "prometheus:9090", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --prometheus \"prometheus:9090\": want an http(s) URL such as http://prometheus:9090\n"}},
		{name: "apiservers", args: []string{"analyze", "--apiservers", "0", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --apiservers 0: must be at least 1\n"}},
		{name: "server concurrency", args: []string{"analyze", "--server-concurrency", "0", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --server-concurrency 0: must be at least 1\n"}},
		{name: "apf without sizes", args: []string{"analyze", "--apf", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --apf needs the forecast's sizes: give --prometheus URL, or --objects, --object-bytes and --apiserver-memory\n"}},
		{name: "apf and json", args: []string{"analyze", "--apf", "-o", "json", "--objects", "pods=3", "--object-bytes", "pods=10800", "--apiserver-memory", "1Gi", log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --apf prints YAML objects: --output does not apply\n"}},
		{name: "responder config without apf", args: []string{"analyze", "--responder-config", badConfig, log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --responder-config sizes --apf's level: it needs --apf\n"}},
		{name: "flowschemas of another kind", args: []string{"analyze", "--flowschemas", notAPF, log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --flowschemas " + notAPF + ": object 1 is a \"ConfigMap\": want FlowSchemas and PriorityLevelConfigurations (kubectl get flowschemas,prioritylevelconfigurations -o yaml)\n"}},
		{name: "flowschemas without levels", args: []string{"analyze", "--flowschemas", noLevels, log}, wantCode: 2,
			wantStderr: []string{"herd analyze: --flowschemas " + noLevels + " has no PriorityLevelConfiguration: get both kinds (kubectl get flowschemas,prioritylevelconfigurations -o yaml)\n"}},
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
	log := herdtest.WriteTemp(t, "audit.log", incidentLog())
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
	f, err := os.Open(herdtest.WriteTemp(t, "stdin", incidentLog()))
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
	log := herdtest.WriteTemp(t, "audit.log", strings.Join(lines, "\n")+"\n")
	cfg := herdtest.WriteTemp(t, "herd.yaml", "rules:\n- role: cni\n  client: weave\n  serviceAccount: kube-system:weave-net\naccounting:\n  relistThreshold: 2\n")
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

// stampedeLog: 100 cilium-agents (one per host IP) LIST every pod, as
// their informers do when they start.
func stampedeLog() string {
	var lines []string
	for i := 0; i < 100; i++ {
		line := auditLine(i+1, "system:serviceaccount:kube-system:cilium", fmt.Sprintf("10.0.%d.%d", i/200, i%200+1), "list",
			"/api/v1/pods?limit=500", "pods", "", 200, "", 60+i)
		lines = append(lines, strings.Replace(line, "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "cilium-agent/v1.16.0", 1))
	}
	return strings.Join(lines, "\n") + "\n"
}

// TestAnalyzeForecast: with the cluster's sizes, the report forecasts what
// one synchronized relist of the cilium fleet would make the apiserver hold
// (internal/forecast: the mixin's model) and says it is past the budget.
func TestAnalyzeForecast(t *testing.T) {
	log := herdtest.WriteTemp(t, "audit.log", stampedeLog())
	var stdout, stderr bytes.Buffer
	args := []string{"analyze", "--objects", "pods=2000", "--object-bytes", "pods=10800", "--objects", "nodes=100", "--apiserver-memory", "459Mi", log}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		// 21.6 MB stored, 23.76 MB served; 9 of its 10-seat LISTs at once in
		// workload-high (98 seats); 4 × 9 × 23.76 MB = 815.7 MiB over 459 MiB;
		// the budget 0.8 × 3 × 459 MiB.
		"stampede:     cilium-agent's 100 instances relisting pods together would take the apiserver to 1.2 GiB, past the budget 1.1 GiB",
		"cilium-agent  pods      all    100        workload-high   22.7 MiB  10     9        815.7 MiB  1.2 GiB  7     RISK",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
