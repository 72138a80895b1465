package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/herd-k8s/herd/exporter/analyze"
	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/forecast"
	"github.com/herd-k8s/herd/test/controlplane"
)

// TestAnalyzeAPFObjectsOnAPIServer: what `herd analyze --apf` prints for a
// cilium fleet at risk is valid to a real kube-apiserver 1.36.3 — applied
// server-side, first as a dry run, next to herd's installed objects
// (manifests/apf/herd.yaml: the same level, no conflict) — and once
// applied it routes cilium's LISTs of pods, and nobody else's, to
// herd-protect.
func TestAnalyzeAPFObjectsOnAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.StartForTest(ctx, t, controlplane.Options{InstallResponder: true})

	// 100 cilium-agents LIST every pod of a cluster of 2,000 10.8 KB pods.
	var log strings.Builder
	for i := range 100 {
		ts := time.Date(2026, 12, 7, 8, 0, i, 0, time.UTC).Format(time.RFC3339Nano)
		e := map[string]any{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
			"auditID": fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1), "verb": "list", "requestURI": "/api/v1/pods?limit=500",
			"user":      map[string]any{"username": cp.User(controlplane.Cilium), "groups": []string{"system:serviceaccounts", "system:serviceaccounts:kube-system"}},
			"sourceIPs": []string{fmt.Sprintf("10.0.0.%d", i+1)}, "userAgent": "cilium-agent/v1.16.0",
			"objectRef": map[string]any{"resource": "pods", "apiVersion": "v1"}, "responseStatus": map[string]any{"code": 200},
			"requestReceivedTimestamp": ts, "stageTimestamp": ts}
		b, _ := json.Marshal(e)
		log.Write(append(b, '\n'))
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(log.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	report, err := analyze.Run([]string{path}, analyze.Options{Cluster: &forecast.Cluster{
		StoredBytes: map[string]float64{"pods": 2000 * 10800}, Objects: map[string]float64{"pods": 2000},
		APIServers: 1, MemoryBytes: 459 << 20, BudgetBytes: forecast.Budget(0, 459<<20),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := report.WriteAPF(&out, apfguard.Level{Shares: 1, Queues: 16, HandSize: 4, QueueLengthLimit: 50}); err != nil {
		t.Fatal(err)
	}
	t.Logf("herd analyze --apf:\n%s", out.String())

	dyn := dynamic.NewForConfigOrDie(cp.Config(controlplane.Admin))
	fc := func(resource string) dynamic.ResourceInterface {
		return dyn.Resource(schema.GroupVersionResource{Group: "flowcontrol.apiserver.k8s.io", Version: "v1", Resource: resource})
	}
	apply := func(dryRun bool) (names []string) {
		t.Helper()
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out.Bytes()), 4096)
		for {
			var u unstructured.Unstructured
			if err := dec.Decode(&u.Object); errors.Is(err, io.EOF) {
				return names
			} else if err != nil {
				t.Fatal(err)
			}
			if len(u.Object) == 0 {
				continue
			}
			ri := fc("flowschemas")
			if u.GetKind() == "PriorityLevelConfiguration" {
				ri = fc("prioritylevelconfigurations")
			}
			// kubectl apply --server-side: no force, so a field another
			// manager set to another value would be a conflict.
			opts := metav1.ApplyOptions{FieldManager: "gitops"}
			if dryRun {
				opts.DryRun = []string{metav1.DryRunAll}
			}
			if _, err := ri.Apply(ctx, u.GetName(), &u, opts); err != nil {
				t.Fatalf("apply %s %s (dry run %v): %v", u.GetKind(), u.GetName(), dryRun, err)
			}
			names = append(names, u.GetKind()+"/"+u.GetName())
		}
	}
	want := "PriorityLevelConfiguration/herd-protect FlowSchema/herd-protect-cilium-agent-pods"
	if got := strings.Join(apply(true), " "); got != want {
		t.Fatalf("objects %s, want %s", got, want)
	}
	if _, err := fc("flowschemas").Get(ctx, "herd-protect-cilium-agent-pods", metav1.GetOptions{}); err == nil {
		t.Fatal("the dry run created the FlowSchema")
	}
	apply(false)
	admin := cp.Client(controlplane.Admin)
	fs, err := admin.FlowcontrolV1().FlowSchemas().Get(ctx, "herd-protect-cilium-agent-pods", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	level, err := admin.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, apfguard.ProtectLevel, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fs.Spec.MatchingPrecedence != apfguard.ProtectPrecedence || fs.Labels["app.kubernetes.io/managed-by"] != "" {
		t.Errorf("FlowSchema %+v: want precedence %d and no managed-by label (the responder never touches it)", fs.ObjectMeta, apfguard.ProtectPrecedence)
	}
	// APF takes the new schema within moments.
	if s, err := controlplane.WaitServedBy(ctx, cp.Config(controlplane.Cilium), "/api/v1/pods", string(fs.UID), 20*time.Second); err != nil {
		t.Fatalf("cilium's LIST of pods, the guard: %v", err)
	} else if s.PriorityLevelUID != string(level.UID) {
		t.Errorf("cilium's LIST of pods is served at level UID %s, not herd-protect's %s", s.PriorityLevelUID, level.UID)
	}
	for who, uri := range map[string]string{controlplane.Cilium: "/api/v1/nodes", controlplane.KubeScheduler: "/api/v1/pods"} {
		s, err := controlplane.ServedBy(ctx, cp.Config(who), uri)
		if err != nil {
			t.Fatal(err)
		}
		if s.FlowSchemaUID == string(fs.UID) {
			t.Errorf("%s's GET %s is served by the guard", who, uri)
		}
	}
}
