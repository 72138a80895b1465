package runbooks

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/test/controlplane"
)

// apfExamples are the FlowSchemas and PriorityLevelConfigurations the
// runbooks tell an on-call engineer to apply, decoded strictly (a misspelt
// field is an error, as `kubectl apply --validate=strict` would say).
type apfExamples struct {
	levels  map[string]flowcontrolv1.PriorityLevelConfiguration
	schemas map[string]flowcontrolv1.FlowSchema
	from    map[string]string // object name -> runbook
}

func readAPFExamples(t *testing.T) apfExamples {
	t.Helper()
	ex := apfExamples{
		levels:  map[string]flowcontrolv1.PriorityLevelConfiguration{},
		schemas: map[string]flowcontrolv1.FlowSchema{},
		from:    map[string]string{},
	}
	files, texts := pages(t)
	for _, f := range files {
		for _, block := range fencedBlocks(texts[f], "yaml") {
			for _, doc := range strings.Split(block, "\n---\n") {
				var head struct {
					APIVersion string `json:"apiVersion"`
					Kind       string `json:"kind"`
				}
				if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
					t.Errorf("%s: YAML example does not parse: %v\n%s", f, err, doc)
					continue
				}
				switch head.Kind {
				case "FlowSchema":
					var fs flowcontrolv1.FlowSchema
					if err := yaml.UnmarshalStrict([]byte(doc), &fs); err != nil {
						t.Errorf("%s: FlowSchema: %v", f, err)
						continue
					}
					ex.schemas[fs.Name], ex.from[fs.Name] = fs, f
				case "PriorityLevelConfiguration":
					var pl flowcontrolv1.PriorityLevelConfiguration
					if err := yaml.UnmarshalStrict([]byte(doc), &pl); err != nil {
						t.Errorf("%s: PriorityLevelConfiguration: %v", f, err)
						continue
					}
					ex.levels[pl.Name], ex.from[pl.Name] = pl, f
				default:
					continue
				}
				if head.APIVersion != flowcontrolv1.SchemeGroupVersion.String() {
					t.Errorf("%s: %s example uses %s, want %s", f, head.Kind, head.APIVersion, flowcontrolv1.SchemeGroupVersion)
				}
			}
		}
	}
	return ex
}

// fencedBlocks returns the contents of the ```lang blocks, de-indented.
func fencedBlocks(text, lang string) []string {
	var out []string
	var cur []string
	in, indent := false, ""
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case !in && trimmed == "```"+lang:
			in, indent, cur = true, line[:len(line)-len(strings.TrimLeft(line, " "))], nil
		case in && trimmed == "```":
			in = false
			out = append(out, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, strings.TrimPrefix(line, indent))
		}
	}
	return out
}

// TestAPFExamplesFollowTheSpec checks the shapes SPEC §4.2 asks for: an
// isolation routes only `list` to a queued level at a precedence after
// system-node-high (400) and before system-nodes (500); a quarantine routes
// one node identity to a Reject level ahead of both.
func TestAPFExamplesFollowTheSpec(t *testing.T) {
	ex := readAPFExamples(t)
	if len(ex.schemas) < 2 || len(ex.levels) < 2 {
		t.Fatalf("found %d FlowSchema and %d PriorityLevelConfiguration examples, want at least 2 of each", len(ex.schemas), len(ex.levels))
	}
	for name, fs := range ex.schemas {
		pl, ok := ex.levels[fs.Spec.PriorityLevelConfiguration.Name]
		if !ok {
			t.Errorf("%s: FlowSchema %s refers to priority level %q, which no runbook defines", ex.from[name], name, fs.Spec.PriorityLevelConfiguration.Name)
			continue
		}
		if pl.Spec.Type != flowcontrolv1.PriorityLevelEnablementLimited || pl.Spec.Limited == nil {
			t.Errorf("%s: priority level %s is not Limited", ex.from[pl.Name], pl.Name)
			continue
		}
		switch pl.Spec.Limited.LimitResponse.Type {
		case flowcontrolv1.LimitResponseTypeQueue: // isolation
			if p := fs.Spec.MatchingPrecedence; p <= 400 || p >= 500 {
				t.Errorf("%s: isolation FlowSchema %s has precedence %d, want between 400 (system-node-high) and 500 (system-nodes)", ex.from[name], name, p)
			}
			for _, r := range fs.Spec.Rules {
				if len(r.NonResourceRules) > 0 {
					t.Errorf("%s: isolation FlowSchema %s matches non-resource URLs", ex.from[name], name)
				}
				for _, rr := range r.ResourceRules {
					if strings.Join(rr.Verbs, ",") != "list" {
						t.Errorf("%s: isolation FlowSchema %s matches verbs %v, want only list", ex.from[name], name, rr.Verbs)
					}
					for _, res := range rr.Resources {
						if res == "*" || res == "leases" || strings.HasPrefix(res, "nodes") {
							t.Errorf("%s: isolation FlowSchema %s matches %q: never leases, node status or everything", ex.from[name], name, res)
						}
					}
				}
			}
		case flowcontrolv1.LimitResponseTypeReject: // quarantine
			if p := fs.Spec.MatchingPrecedence; p >= 400 {
				t.Errorf("%s: quarantine FlowSchema %s has precedence %d, want below 400 to catch node status and leases too", ex.from[name], name, p)
			}
			for _, r := range fs.Spec.Rules {
				for _, s := range r.Subjects {
					if s.Kind != flowcontrolv1.SubjectKindUser || s.User == nil || !strings.HasPrefix(s.User.Name, "system:node:") {
						t.Errorf("%s: quarantine FlowSchema %s matches %+v: only a single node identity may be quarantined", ex.from[name], name, s)
					}
				}
			}
		}
	}
}

// pfGet sends GET path as the identity and returns the status, the
// FlowSchema UID API Priority and Fairness chose, and how long it took.
func pfGet(ctx context.Context, client *http.Client, base, path string) (int, string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return 0, "", 0, err
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Kubernetes-PF-FlowSchema-UID"), time.Since(start), nil
}

// TestAPFExamplesOnRealAPIServer applies the runbooks' APF examples to a
// real kube-apiserver 1.36 and checks that they do what the runbooks say:
// the isolation catches cilium's pod LISTs and nothing else of cilium's, the
// quarantine answers a ghost kubelet's too-large-resourceVersion LISTs with
// fast 429s instead of 3-second 504s.
func TestAPFExamplesOnRealAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	ex := readAPFExamples(t)
	isolation, ok := ex.schemas["isolate-relist-cilium-agent-pods"]
	if !ok {
		t.Fatal("HerdRelistStorm.md no longer has the isolate-relist-cilium-agent-pods example; update this test")
	}
	quarantine, ok := ex.schemas["quarantine-old-worker-7"]
	if !ok {
		t.Fatal("HerdGhostNodeClient.md no longer has the quarantine-old-worker-7 example; update this test")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{Nodes: []string{"node-1", "old-worker-7"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	fc := cp.Client(controlplane.Admin).FlowcontrolV1()
	httpClient := func(identity string) *http.Client {
		c, err := rest.HTTPClientFor(rest.CopyConfig(cp.Config(identity)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cilium := httpClient(controlplane.Cilium)
	ghost := httpClient(controlplane.KubeletIdentity("old-worker-7"))

	// The ghost's LIST with a resourceVersion from the future, as in incident
	// 000: before the quarantine it waits ~3 s and ends in a 504.
	rts, err := cp.Client(controlplane.Admin).NodeV1().RuntimeClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	current, err := strconv.ParseUint(rts.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	tooLarge := fmt.Sprintf("/apis/node.k8s.io/v1/runtimeclasses?resourceVersion=%d", current+1_000_000)
	if code, _, took, err := pfGet(ctx, ghost, cp.URL, tooLarge); err != nil || code != http.StatusGatewayTimeout || took < 2*time.Second {
		t.Fatalf("before the quarantine the ghost's LIST answered %d after %v (err %v), want a 504 after ~3 s", code, took, err)
	}

	for _, pl := range ex.levels {
		if _, err := fc.PriorityLevelConfigurations().Create(ctx, &pl, metav1.CreateOptions{FieldManager: "runbook"}); err != nil {
			t.Fatalf("%s: the apiserver refuses PriorityLevelConfiguration %s: %v", ex.from[pl.Name], pl.Name, err)
		}
	}
	uids := map[string]string{}
	for _, fs := range ex.schemas {
		got, err := fc.FlowSchemas().Create(ctx, &fs, metav1.CreateOptions{FieldManager: "runbook"})
		if err != nil {
			t.Fatalf("%s: the apiserver refuses FlowSchema %s: %v", ex.from[fs.Name], fs.Name, err)
		}
		uids[got.Name] = string(got.UID)
	}
	ksa, err := fc.FlowSchemas().Get(ctx, "kube-system-service-accounts", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The APF controller picks the new objects up asynchronously.
	waitFor := func(client *http.Client, path, wantUID, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, uid, _, err := pfGet(ctx, client, cp.URL, path)
			if err == nil && uid == wantUID {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GET %s went to FlowSchema UID %q (code %d, err %v), want %s", what, path, uid, code, err, wantUID)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor(cilium, "/api/v1/pods?limit=1", uids[isolation.Name], "cilium's pod LIST")
	waitFor(ghost, "/apis/node.k8s.io/v1/runtimeclasses?limit=1", uids[quarantine.Name], "the ghost's LIST")

	// Only list on pods is isolated: cilium's other requests stay where they were.
	for _, path := range []string{"/api/v1/namespaces?limit=1", "/api/v1/pods?watch=1&timeoutSeconds=1", "/api/v1/namespaces/kube-system/pods/none"} {
		_, uid, _, err := pfGet(ctx, cilium, cp.URL, path)
		if err != nil {
			t.Fatal(err)
		}
		if uid != string(ksa.UID) {
			t.Errorf("cilium GET %s went to FlowSchema UID %s, want kube-system-service-accounts (%s): the isolation catches more than list on pods", path, uid, ksa.UID)
		}
	}

	// With the quarantine, all but the one request the empty level admits get
	// an immediate 429.
	const n = 10
	var (
		mu    sync.Mutex
		codes = map[int]int{}
		slow  []time.Duration
		wg    sync.WaitGroup
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, took, err := pfGet(ctx, ghost, cp.URL, tooLarge)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				codes[-1]++
				return
			}
			codes[code]++
			if code == http.StatusTooManyRequests && took > time.Second {
				slow = append(slow, took)
			}
		}()
	}
	wg.Wait()
	t.Logf("ghost's %d concurrent too-large-RV LISTs under quarantine: %v", n, codes)
	if codes[http.StatusTooManyRequests] < n-2 {
		t.Errorf("quarantine rejected %d of %d LISTs with 429 (codes %v), want at least %d", codes[http.StatusTooManyRequests], n, codes, n-2)
	}
	if len(slow) > 0 {
		t.Errorf("429s took %v, want them immediate", slow)
	}

	// Undo, as the runbooks say: delete the FlowSchemas and levels.
	for name := range ex.schemas {
		if err := fc.FlowSchemas().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
	for name := range ex.levels {
		if err := fc.PriorityLevelConfigurations().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Error(err)
		}
	}
}
