package analyze

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/forecast"
)

// listEvents are n LISTs of uri by user, one instance per source IP.
func listEvents(n int, user, ua, uri, resource string) string {
	var b strings.Builder
	for i := range n {
		ts := time.Date(2026, 12, 7, 8, 0, i%60, i, time.UTC).Format(time.RFC3339Nano)
		e := map[string]any{"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "stage": "ResponseComplete",
			"auditID": fmt.Sprintf("%08d-0000-4000-8000-%012d", len(user), i+1), "verb": "list", "requestURI": uri,
			"user": map[string]any{"username": strings.ReplaceAll(user, "%d", fmt.Sprint(i))}, "sourceIPs": []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)},
			"userAgent": ua, "objectRef": map[string]any{"resource": resource, "apiVersion": "v1"}, "responseStatus": map[string]any{"code": 200},
			"requestReceivedTimestamp": ts, "stageTimestamp": ts}
		line, _ := json.Marshal(e)
		b.Write(append(line, '\n'))
	}
	return b.String()
}

// cluster2000 is SPEC §8.1's: 2,000 pods of 10.8 KB, 100 Nodes, the
// apiserver at 459 MiB.
func cluster2000() *forecast.Cluster {
	return &forecast.Cluster{StoredBytes: map[string]float64{"pods": 2000 * 10800}, Objects: map[string]float64{"pods": 2000, "nodes": 100},
		APIServers: 1, MemoryBytes: 459 << 20, BudgetBytes: forecast.Budget(0, 459<<20)}
}

// TestWriteAPF: the guards of the clients at risk, as the responder's
// protect builds them (internal/apfguard), and herd-protect exactly as herd
// installs it (manifests/apf/herd.yaml); a kubelet fleet's unfiltered LISTs
// are guarded by its group, their indexed ones never; an unauthenticated
// caller is named, not guarded.
func TestWriteAPF(t *testing.T) {
	log := listEvents(100, "system:serviceaccount:kube-system:cilium", "cilium-agent/v1.16.0", "/api/v1/pods?limit=500", "pods") +
		listEvents(100, "system:node:node-%d", "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "/api/v1/pods?resourceVersion=0", "pods") +
		listEvents(100, "system:node:node-%d", "kubelet/v1.36.3 (linux/amd64) kubernetes/abc", "/api/v1/namespaces/default/services?fieldSelector=spec.nodeName%3Dnode-1", "services")
	// 3,000 pods: at 2,000 the kubelets' 7 LISTs at once in level system
	// stay just under the budget (peak 1,094 of 1,102 MiB) and would not be guarded.
	c := cluster2000()
	c.StoredBytes["pods"], c.Objects["pods"] = 3000*10800, 3000
	r, warn := analyzeString(t, Options{Cluster: c}, "audit.log", log)
	if warn != "" {
		t.Fatalf("warnings: %s", warn)
	}
	var out bytes.Buffer
	if err := r.WriteAPF(&out, apfguard.Level{Shares: 1, Queues: 16, HandSize: 4, QueueLengthLimit: 50}); err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(out.String(), "\n---\n")
	if len(docs) != 4 {
		t.Fatalf("%d documents, want the comments, the level and two schemas:\n%s", len(docs), out.String())
	}
	for _, want := range []string{
		"# herd-protect-cilium-agent-pods: cni/cilium-agent LISTs of pods (shapes all), before kube-system-service-accounts at 900\n",
		"# herd-protect-kubelet-pods: kubelet/kubelet LISTs of pods (shapes all), before system-nodes at 500",
	} {
		if !strings.Contains(docs[0], want) {
			t.Errorf("comments lack %q:\n%s", want, docs[0])
		}
	}

	// The level: manifests/apf/herd.yaml's herd-protect, to the field.
	var level flowcontrolv1.PriorityLevelConfiguration
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &level); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../manifests/apf/herd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, levels, err := ParseAPFObjects("herd.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	var installed *flowcontrolv1.PriorityLevelConfiguration
	for _, pl := range levels {
		if pl.Name == apfguard.ProtectLevel {
			installed = pl
		}
	}
	if installed == nil || !reflect.DeepEqual(installed.Spec, level.Spec) || !reflect.DeepEqual(installed.Labels, level.Labels) || !reflect.DeepEqual(installed.Annotations, level.Annotations) {
		t.Errorf("herd-protect printed:\n%+v\ninstalled:\n%+v", level, installed)
	}

	var cilium, kubelet flowcontrolv1.FlowSchema
	for doc, into := range map[string]*flowcontrolv1.FlowSchema{docs[2]: &cilium, docs[3]: &kubelet} {
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatal(err)
		}
	}
	want := apfguard.FlowSchema("herd-protect-cilium-agent-pods", apfguard.ProtectLevel, 440, apfguard.ListRule("", "pods",
		[]flowcontrolv1.Subject{{Kind: flowcontrolv1.SubjectKindServiceAccount, ServiceAccount: &flowcontrolv1.ServiceAccountSubject{Namespace: "kube-system", Name: "cilium"}}}))
	if !reflect.DeepEqual(cilium.Spec, want.Spec) || cilium.Labels["app.kubernetes.io/managed-by"] != "" || cilium.Annotations["herd.dev/client"] != "cilium-agent" {
		t.Errorf("cilium's guard:\n%+v\nwant spec\n%+v", cilium, want.Spec)
	}
	if s := kubelet.Spec.Rules[0].Subjects; kubelet.Name != "herd-protect-kubelet-pods" || len(s) != 1 || s[0].Group == nil || s[0].Group.Name != "system:nodes" {
		t.Errorf("kubelets' guard: %+v", kubelet)
	}
}

// TestWriteAPFNothingAtRisk: a small cluster gets the level alone and says
// so; without sizes, --apf refuses.
func TestWriteAPFNothingAtRisk(t *testing.T) {
	c := cluster2000()
	c.StoredBytes["pods"] = 200 * 5000
	r, _ := analyzeString(t, Options{Cluster: c}, "audit.log", listEvents(20, "system:serviceaccount:kube-system:cilium", "cilium-agent/v1.16.0", "/api/v1/pods", "pods"))
	var out bytes.Buffer
	if err := r.WriteAPF(&out, apfguard.Level{Shares: 1, Queues: 16, HandSize: 4, QueueLengthLimit: 50}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "# No client's predicted peak is above the budget: no FlowSchema") || strings.Count(out.String(), "kind: ") != 1 {
		t.Errorf("output:\n%s", out.String())
	}
	r, _ = analyzeString(t, Options{}, "audit.log", listEvents(20, "system:serviceaccount:kube-system:cilium", "cilium-agent/v1.16.0", "/api/v1/pods", "pods"))
	if err := r.WriteAPF(&out, apfguard.Level{}); err == nil || err.Error() != "--apf: the forecast has no sizes: nothing is known to be at risk" {
		t.Errorf("unsized: %v", err)
	}
}
