package analyze

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/exporter/config"
)

// publicDir holds real audit events from public repositories, with their
// attribution (testdata/public/README.md there); they are reused in place
// rather than copied.
const publicDir = "../audit/testdata/public"

// TestPublicFixtures reads what real apiservers and cloud wrappers wrote.
func TestPublicFixtures(t *testing.T) {
	type roleCount struct {
		role                string
		instances, requests int
		relists             uint64
	}
	tests := []struct {
		files     []string
		mode      Mode
		events    EventCounts
		roles     []roleCount
		errorRows int // with --include-other
	}{
		{files: []string{"02_sysdiglabs-aks_samples-event.json"}, mode: ModeLines, events: EventCounts{Read: 22, Accounted: 22},
			roles: []roleCount{{"kubelet", 1, 3, 0}, {"other", 3, 18, 0}}, errorRows: 1},
		{files: []string{"02b_sysdiglabs-aks_unwrapped.jsonl"}, mode: ModeLines, events: EventCounts{Read: 22, Accounted: 22},
			roles: []roleCount{{"kubelet", 1, 3, 0}, {"other", 3, 18, 0}}, errorRows: 1},
		{files: []string{"03_apisnoop_example-user-agent.log"}, mode: ModeLines, events: EventCounts{Read: 8, Accounted: 8},
			roles: []roleCount{{"other", 1, 8, 5}}},
		{files: []string{"04b_audit2rbac_demo-v1.log"}, mode: ModeLines, events: EventCounts{Read: 37, Accounted: 37},
			roles: []roleCount{{"other", 1, 37, 3}}, errorRows: 1}, // 11 of the 14 LISTs were refused (403): not relists
		{files: []string{"06_kbx_single-event.json"}, mode: ModeDocument, events: EventCounts{Read: 1, Accounted: 1},
			roles: []roleCount{{"kubelet", 1, 1, 0}}},
		// The Azure wrapper and its unwrapped copy hold the same events.
		{files: []string{"02_sysdiglabs-aks_samples-event.json", "02b_sysdiglabs-aks_unwrapped.jsonl"}, mode: ModeLines,
			events: EventCounts{Read: 44, Accounted: 22, Duplicate: 22},
			roles:  []roleCount{{"kubelet", 1, 3, 0}, {"other", 3, 18, 0}}, errorRows: 1},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.files, "+"), func(t *testing.T) {
			var paths []string
			for _, f := range tc.files {
				paths = append(paths, filepath.Join(publicDir, f))
			}
			var warn strings.Builder
			r, err := Run(paths, Options{Warn: &warn, IncludeOther: true})
			if err != nil {
				t.Fatal(err)
			}
			if warn.Len() > 0 {
				t.Errorf("warnings: %s", warn.String())
			}
			if r.Inputs[0].Mode != tc.mode {
				t.Errorf("mode = %s, want %s", r.Inputs[0].Mode, tc.mode)
			}
			if r.Events != tc.events {
				t.Errorf("events = %+v, want %+v", r.Events, tc.events)
			}
			got := map[string]roleCount{}
			for _, rt := range r.Roles {
				if rt.Instances > 0 {
					got[rt.Role] = roleCount{rt.Role, rt.Instances, int(rt.Requests), rt.Relists}
				}
			}
			if len(got) != len(tc.roles) {
				t.Errorf("roles = %+v, want %+v", got, tc.roles)
			}
			for _, want := range tc.roles {
				if got[want.role] != want {
					t.Errorf("role %s = %+v, want %+v", want.role, got[want.role], want)
				}
			}
			if r.Errors.Count != tc.errorRows {
				t.Errorf("error rows = %+v, want %d", r.Errors.Rows, tc.errorRows)
			}
			if out := table(t, r); !strings.HasPrefix(out, "herd analyze: "+paths[0]) {
				t.Errorf("table starts:\n%s", firstLines(out, 3))
			}
		})
	}
}

// recorded is what the tests need of testdata/audit/scenario.json, written
// by test/fixtures from a real kube-apiserver run.
type recorded struct {
	Clients []struct {
		Agent string `json:"agent"`
		User  string `json:"user"`
		Ghost bool   `json:"ghost"`
	} `json:"clients"`
	Requests []struct {
		User     string `json:"user"`
		SourceIP string `json:"sourceIP"`
		Verb     string `json:"verb"`
		APIGroup string `json:"apiGroup"`
		Resource string `json:"resource"`
		Kind     string `json:"kind"`
		URI      string `json:"uri"`
		Code     int    `json:"code"`
	} `json:"requests"`
	Totals struct {
		Events int `json:"events"`
	} `json:"totals"`
}

// TestRecordedFixtures reads the real control plane's audit log and webhook
// batches and checks the report against what scenario.json says the
// scenario did: the stale kubelet relisting pods and the identities in
// too-large-RV loops are named in the first lines, and every relist,
// too-large and TokenReview count is exact.
func TestRecordedFixtures(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "audit")
	data, err := os.ReadFile(filepath.Join(dir, "scenario.json"))
	if err != nil {
		t.Fatalf("%v: the recorded fixtures are committed; regenerate them with make fixtures", err)
	}
	var sc recorded
	if err := json.Unmarshal(data, &sc); err != nil {
		t.Fatalf("scenario.json: %v", err)
	}

	// What the report must say, from the scenario's requests.
	relists, tooLarge := map[stream]uint64{}, map[stream]uint64{}
	tokenReviews := map[string]uint64{}
	for _, rq := range sc.Requests {
		node := strings.TrimPrefix(rq.User, "system:node:")
		if node == rq.User {
			node = rq.SourceIP // identities that name no node are told apart by IP
		}
		res := rq.Resource
		if rq.APIGroup != "" {
			res += "." + rq.APIGroup
		}
		k := stream{rq.User, node, res}
		if (rq.Kind == "list" || rq.Kind == "watchlist") && rq.Code != 401 && rq.Code != 403 {
			relists[k]++ // a refused request is not a relist
		}
		if rq.Code == 504 && strings.Contains(rq.URI, "resourceVersion=191700552") {
			tooLarge[k]++
		}
		if rq.Verb == "create" && rq.Resource == "tokenreviews" && rq.Code == 201 {
			tokenReviews[rq.User]++
		}
	}
	// The relisting kubelet: the most pod relists and, among equals, the one
	// also stuck in too-large errors (the report's documented order).
	var kubeletPods []stream
	for k := range relists {
		if strings.HasPrefix(k.identity, "system:node:") && k.resource == "pods" {
			kubeletPods = append(kubeletPods, k)
		}
	}
	slices.SortFunc(kubeletPods, func(x, y stream) int {
		return cmp.Or(cmp.Compare(relists[y], relists[x]), cmp.Compare(errorsOf(tooLarge, y.identity), errorsOf(tooLarge, x.identity)),
			cmp.Compare(x.identity, y.identity))
	})
	var stale stream
	if len(kubeletPods) > 0 {
		stale = kubeletPods[0]
	}
	var stuck string // the identity with the most too-large errors
	for k := range tooLarge {
		if n, m := errorsOf(tooLarge, k.identity), errorsOf(tooLarge, stuck); n > m || n == m && k.identity < stuck {
			stuck = k.identity
		}
	}
	if stale.identity == "" || stuck == "" {
		t.Fatalf("scenario.json has no relisting kubelet or too-large errors: %+v %q", stale, stuck)
	}

	for _, file := range []string{"audit.log", "webhook-batches.jsonl"} {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join(dir, file)
			var warn strings.Builder
			// The recorder simulated node addresses with X-Forwarded-For from
			// loopback: 127.0.0.1 is the proxy herd may believe, as a cluster
			// would configure its load balancer (docs/exporter.md).
			cfg := config.Default()
			cfg.Accounting.TrustedProxies = []string{"127.0.0.1/32"}
			r, err := Run([]string{path}, Options{Warn: &warn, Top: 1000, Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			if warn.Len() > 0 {
				t.Errorf("warnings: %s", warn.String())
			}
			if want := (EventCounts{Read: sc.Totals.Events, Accounted: sc.Totals.Events}); r.Events != want {
				t.Errorf("events = %+v, want %+v", r.Events, want)
			}

			head := firstLines(table(t, r), 10)
			wantRelist := fmt.Sprintf("relisting:    kubelet %s relisted pods %d times", stale.identity, relists[stale])
			wantStuck := fmt.Sprintf("too-large RV: %s: %d errors", stuck, errorsOf(tooLarge, stuck))
			for _, want := range []string{wantRelist, wantStuck} {
				if !strings.Contains(head, want) {
					t.Errorf("first lines lack %q:\n%s", want, head)
				}
			}

			gotRelists := map[stream]uint64{}
			for _, row := range r.Relisting.Rows {
				gotRelists[stream{row.Identity, row.Node, row.Resource}] = row.Relists
			}
			for k, n := range relists {
				if n >= uint64(r.Relisting.Threshold) && gotRelists[k] != n {
					t.Errorf("%+v: %d relists in the report, scenario says %d", k, gotRelists[k], n)
				}
				delete(gotRelists, k)
			}
			if len(gotRelists) > 0 {
				t.Errorf("relisting rows the scenario does not have: %+v", gotRelists)
			}

			gotTooLarge := map[stream]uint64{}
			for _, row := range r.TooLarge.Rows {
				gotTooLarge[stream{row.Identity, row.Node, row.Resource}] = row.Errors
			}
			if fmt.Sprint(gotTooLarge) != fmt.Sprint(tooLarge) {
				t.Errorf("too-large rows = %v, scenario says %v", gotTooLarge, tooLarge)
			}

			gotReviews := map[string]uint64{}
			for _, row := range r.TokenReviews.Rows {
				gotReviews[row.Identity] += row.TokenReviews
			}
			if fmt.Sprint(gotReviews) != fmt.Sprint(tokenReviews) {
				t.Errorf("tokenreviews = %v, scenario says %v", gotReviews, tokenReviews)
			}

			// Every ghost kubelet of the scenario is a lead.
			for _, c := range sc.Clients {
				if !c.Ghost || c.Agent != "kubelet" {
					continue
				}
				found := false
				for _, g := range r.Ghosts.Rows {
					found = found || g.Identity == c.User
				}
				if !found {
					t.Errorf("ghost %s is not among the possible ghosts: %+v", c.User, r.Ghosts.Rows)
				}
			}
		})
	}
}

// stream is one identity's requests on one resource, from one node (or,
// for identities that name no node, one source IP).
type stream struct{ identity, node, resource string }

// errorsOf sums an identity's counts over its streams.
func errorsOf(m map[stream]uint64, identity string) uint64 {
	var n uint64
	for k, v := range m {
		if k.identity == identity {
			n += v
		}
	}
	return n
}
