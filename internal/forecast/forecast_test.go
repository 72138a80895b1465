package forecast

import (
	"encoding/json"
	"math"
	"testing"

	jsonnet "github.com/google/go-jsonnet"
)

// TestConstantsAreTheMixins: the Go model's constants are the mixin's
// _config (rules/config.libsonnet), evaluated as jsonnet.
func TestConstantsAreTheMixins(t *testing.T) {
	vm := jsonnet.MakeVM()
	vm.Importer(&jsonnet.FileImporter{JPaths: []string{"../../rules"}})
	out, err := vm.EvaluateAnonymousSnippet("config.jsonnet", `(import "config.libsonnet")._config`)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]float64{
		"stampedeResponseBytesPerStoredByte": ResponseBytesPerStoredByte,
		"stampedeListMemoryFactor":           ListMemoryFactor,
		"stampedeWatchListBytes":             WatchListBytes,
		"stampedeBudgetShare":                BudgetShare,
		"apiserverMemoryHeadroomFactor":      MemoryHeadroomFactor,
	} {
		got, ok := cfg[name].(float64)
		if !ok {
			t.Errorf("rules/config.libsonnet has no number %s (got %v): the mixin's forecast and herd analyze's must share their constants", name, cfg[name])
			continue
		}
		if got != want {
			t.Errorf("rules/config.libsonnet %s = %g; internal/forecast says %g", name, got, want)
		}
	}
}

// TestWorkedExample is rules/tests/stampede.yaml's cluster "prod" (SPEC
// §8.1's numbers), whose every value promtool checks against the recording
// rules: the same inputs give the same outputs here.
func TestWorkedExample(t *testing.T) {
	c := Cluster{
		StoredBytes:  map[string]float64{"pods": 18_000_000},
		Objects:      map[string]float64{"pods": 2000, "nodes": 100},
		APIServers:   1,
		MemoryBytes:  481_296_384,
		BudgetBytes:  Budget(0, 481_296_384),
		LimitSeats:   map[string]float64{"workload-high": 98, "system": 74},
		NominalSeats: map[string]float64{"workload-high": 98, "system": 74},
	}
	rows := []Row{
		{Role: "cni", Client: "cilium-agent", Resource: "pods", Shape: "all", Consistency: "consistent", Mode: "list", PriorityLevel: "workload-high", Instances: 100},
		{Role: "kubelet", Client: "kubelet", Resource: "pods", Shape: "node", Consistency: "cache", Mode: "list", PriorityLevel: "system", Instances: 100},
	}
	got := Forecast(rows, c)
	if len(got) != 2 {
		t.Fatalf("streams %+v", got)
	}
	near := func(what string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 0.5 {
			t.Errorf("%s = %f, want %f", what, got, want)
		}
	}
	cil, kub := got[0], got[1]
	if cil.Client != "cilium-agent" || kub.Client != "kubelet" {
		t.Fatalf("order %s, %s: want the most growth first", cil.Client, kub.Client)
	}
	near("budget", c.BudgetBytes, 1_155_111_321.6)
	near("cilium list bytes", cil.ListBytes, 19_800_000)
	near("cilium seats", cil.ListSeats, 10)
	near("cilium concurrency", cil.Concurrency, 9)
	near("cilium growth", cil.GrowthBytes, 712_800_000)
	near("cilium peak", cil.PeakBytes, 1_194_096_384)
	near("cilium safe concurrency", cil.SafeConcurrency, 8)
	near("kubelet list bytes", kub.ListBytes, 198_000)
	near("kubelet seats", kub.ListSeats, 10)
	near("kubelet concurrency", kub.Concurrency, 7)
	near("kubelet growth", kub.GrowthBytes, 5_544_000)
	if !cil.Risk || kub.Risk {
		t.Errorf("risk: cilium %v, kubelet %v; want cilium's only", cil.Risk, kub.Risk)
	}
}

// TestCheapAndUnsized: WatchList streams hold at most 1 MB each; an exact
// LIST is charged up to 100 seats but no more than its level allows; a
// resource without sizes is counted, not forecast; a small cluster is not
// at risk.
func TestCheapAndUnsized(t *testing.T) {
	c := Cluster{
		StoredBytes: map[string]float64{"pods": 18_000_000}, Objects: map[string]float64{"pods": 2000},
		APIServers: 2, MemoryBytes: 481_296_384, BudgetBytes: Budget(4e9, 0),
		LimitSeats: map[string]float64{"workload-high": 98}, NominalSeats: map[string]float64{"workload-high": 98},
	}
	got := Forecast([]Row{
		{Role: "cni", Client: "a", Resource: "pods", Shape: "all", Consistency: "consistent", Mode: "watchlist", PriorityLevel: "workload-high", Instances: 100},
		{Role: "cni", Client: "b", Resource: "pods", Shape: "all", Consistency: "exact", Mode: "list", PriorityLevel: "workload-high", Instances: 100},
		{Role: "cni", Client: "c", Resource: "secrets", Shape: "all", Mode: "list", Instances: 7},
	}, c)
	by := map[string]Stream{}
	for _, s := range got {
		by[s.Client] = s
	}
	// 100 streams over 2 apiservers, 10 seats each: 9 at once, 1 MB each.
	if a := by["a"]; a.GrowthBytes != 4*9*1e6 || a.Concurrency != 0 {
		t.Errorf("watchlist: %+v", a)
	}
	// Exact: ceil(18 MB / 100 kB) = 180 → 100 → ceil(0.15 × 98) = 15 seats; floor(98 / 15) = 6.
	if b := by["b"]; b.ListSeats != 15 || b.Concurrency != 6 || b.Risk {
		t.Errorf("exact: %+v (budget %g)", b, c.BudgetBytes)
	}
	if s := by["c"]; s.Sized || s.Instances != 7 || s.Risk {
		t.Errorf("unsized: %+v", s)
	}
}
