// Package forecast is the stampede forecast's arithmetic (issue 12) in Go,
// for `herd analyze`, which reports the forecast from an audit log without
// Prometheus. The model and its constants are the mixin's
// (rules/rules/stampede.libsonnet, rules/config.libsonnet _config): this
// package mirrors them, and its tests hold it to them — the constants
// against config.libsonnet, the arithmetic against the promtool test's
// worked example (rules/tests/stampede.yaml). Change the model there
// first, then here.
//
// Per row (role, client, resource, shape, consistency, mode, priority
// level) of live instances:
//
//	list bytes  = ResponseBytesPerStoredByte × stored bytes of what one relist selects
//	              (the whole resource for all, selected, unknown; / Nodes for node; / objects for object)
//	seats       = APF's size estimate: ceil(loaded bytes / 100,000), at most 10 from the
//	              watch cache (1,000,000 bytes), 100 from etcd (exact LISTs), and at most
//	              ceil(0.15 × the level's nominal seats)
//	concurrency = min(ceil(instances / apiservers), max(1, floor(level's seats / seats)))
//	growth      = ListMemoryFactor × concurrency × list bytes (a WatchList: at most WatchListBytes)
//
// and per stream (role, client, resource, shape): growth and LIST
// concurrency summed over its rows, peak = apiserver memory now + growth,
// at risk when peak > budget and the shape is not a cheap one.
package forecast

import (
	"fmt"
	"math"
	"slices"
	"sort"
)

// The model's constants (rules/config.libsonnet, where their derivation is
// written; forecast_test.go checks these against it).
const (
	// ResponseBytesPerStoredByte: the apiserver stores built-in types as
	// protobuf and serves JSON (measured 1.10 on kube-apiserver 1.36.3).
	ResponseBytesPerStoredByte = 1.1
	// ListMemoryFactor (k): apiserver memory per byte of a LIST running
	// at once; measured between 2.0 and 7.2 (rules/config.libsonnet says
	// where), 4 puts every measurement within 2× of the forecast.
	ListMemoryFactor = 4.0
	// WatchListBytes: what one WatchList stream holds at once.
	WatchListBytes = 1_000_000.0
	// BudgetShare: HerdStampedeRisk fires when the peak exceeds this share
	// of the memory budget.
	BudgetShare = 0.8
	// MemoryHeadroomFactor: without a memory limit, the budget is this
	// many times the apiserver's median memory.
	MemoryHeadroomFactor = 3.0
)

// APF's own constants (k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/
// request/list_work_estimator.go and apf_controller.go): not knobs.
const (
	bytesPerSeat    = 100_000.0
	cacheMaxBytes   = 1_000_000.0 // cacheWithStreamingMaxMemoryUsage
	maxCacheSeats   = 10.0
	maxListSeats    = 100.0 // MaximumListSeatsLimit
	maxSeatsPercent = 0.15  // priorityLevelMaxSeatsPercent
)

// Row is one herd_stampede_instances series.
type Row struct {
	Role, Client, Resource, Shape string
	Consistency, Mode             string // mode: list, watchlist, unknown
	PriorityLevel                 string // "" when unknown
	Instances                     float64
}

// Cluster is what the apiserver's own metrics say (or the flags of herd
// analyze stand in for).
type Cluster struct {
	// StoredBytes and Objects by herd's resource label (pods,
	// endpointslices.discovery.k8s.io): apiserver_resource_size_estimate_bytes
	// and apiserver_resource_objects.
	StoredBytes, Objects map[string]float64
	// APIServers share the instances' connections (at least 1).
	APIServers int
	// MemoryBytes is the largest apiserver's resident memory now.
	MemoryBytes float64
	// BudgetBytes is the share of the memory budget a peak must stay
	// under (herd:stampede_budget_bytes; Budget computes it).
	BudgetBytes float64
	// LimitSeats are the seats each level may run at once (the larger of
	// its current and nominal limit); NominalSeats its nominal ones. A
	// level missing from LimitSeats does not bound concurrency.
	LimitSeats, NominalSeats map[string]float64
}

// Budget is herd:stampede_budget_bytes: BudgetShare of limitBytes when set,
// else of MemoryHeadroomFactor × the apiserver's median memory.
func Budget(limitBytes, medianMemory float64) float64 {
	if limitBytes > 0 {
		return BudgetShare * limitBytes
	}
	return BudgetShare * MemoryHeadroomFactor * medianMemory
}

// Stream is one (role, client, resource, shape): the contract's
// herd:stampede_* values.
type Stream struct {
	Role, Client, Resource, Shape string
	Instances                     float64
	// Sized: the resource's stored bytes are known; without them only
	// Instances is.
	Sized                                   bool
	ListBytes, ListSeats, Concurrency       float64
	GrowthBytes, PeakBytes, SafeConcurrency float64
	// Risk: HerdStampedeRisk would fire (after its `for`).
	Risk bool
}

// Forecast computes the streams of rows, the most growth first.
func Forecast(rows []Row, c Cluster) []Stream {
	type key struct{ role, client, resource, shape string }
	byKey := map[key]*Stream{}
	seatsSet := map[key]bool{}
	var order []key
	apiservers := float64(max(c.APIServers, 1))
	for _, r := range rows {
		k := key{r.Role, r.Client, r.Resource, r.Shape}
		s := byKey[k]
		if s == nil {
			s = &Stream{Role: r.Role, Client: r.Client, Resource: r.Resource, Shape: r.Shape}
			byKey[k] = s
			order = append(order, k)
		}
		s.Instances += r.Instances
		stored, ok := c.StoredBytes[r.Resource]
		if !ok {
			continue
		}
		listBytes, ok := ListBytes(r.Shape, r.Resource, c)
		if !ok {
			continue
		}
		s.Sized, s.ListBytes = true, listBytes
		loaded := stored
		if r.Shape == "object" {
			loaded = stored / math.Max(c.Objects[r.Resource], 1)
		}
		var seats float64
		if r.Consistency == "exact" && r.Mode != "watchlist" {
			seats = clamp(math.Ceil(loaded/bytesPerSeat), 1, maxListSeats)
		} else {
			seats = clamp(math.Ceil(math.Min(loaded, cacheMaxBytes)/bytesPerSeat), 1, maxCacheSeats)
		}
		if nominal, ok := c.NominalSeats[r.PriorityLevel]; ok {
			seats = math.Min(seats, math.Max(math.Ceil(maxSeatsPercent*nominal), 1))
		}
		conc := math.Ceil(r.Instances / apiservers)
		if limit, ok := c.LimitSeats[r.PriorityLevel]; ok {
			conc = math.Min(conc, math.Max(math.Floor(limit/seats), 1))
		}
		if r.Mode == "watchlist" {
			s.GrowthBytes += ListMemoryFactor * conc * math.Min(listBytes, WatchListBytes)
			continue
		}
		s.GrowthBytes += ListMemoryFactor * conc * listBytes
		s.Concurrency += conc
		if !seatsSet[k] || seats < s.ListSeats {
			s.ListSeats, seatsSet[k] = seats, true
		}
	}
	out := make([]Stream, 0, len(order))
	for _, k := range order {
		s := *byKey[k]
		if s.Sized {
			s.PeakBytes = s.GrowthBytes + c.MemoryBytes
			s.SafeConcurrency = math.Floor(math.Max(c.BudgetBytes-c.MemoryBytes, 0) / (ListMemoryFactor * s.ListBytes))
			s.Risk = s.PeakBytes > c.BudgetBytes && c.BudgetBytes > 0 && Alerting(s.Role, s.Client, s.Shape)
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GrowthBytes > out[j].GrowthBytes })
	return out
}

// ListBytes is herd:stampede_list_bytes of one relist of resource in
// shape: what the apiserver serves (JSON), from its stored bytes.
func ListBytes(shape, resource string, c Cluster) (float64, bool) {
	stored, ok := c.StoredBytes[resource]
	if !ok {
		return 0, false
	}
	switch shape {
	case "node":
		nodes, ok := c.Objects["nodes"]
		if !ok {
			return 0, false
		}
		return ResponseBytesPerStoredByte * stored / math.Max(nodes, 1), true
	case "object":
		objects, ok := c.Objects[resource]
		if !ok {
			return 0, false
		}
		return ResponseBytesPerStoredByte * stored / math.Max(objects, 1), true
	}
	return ResponseBytesPerStoredByte * stored, true
}

// Alerting reports whether HerdStampedeRisk considers a stream at all:
// cheap shapes (node: the spec.nodeName index; object: one key) and the
// catch-all clients (no one client) never raise it.
func Alerting(role, client, shape string) bool {
	return !slices.Contains([]string{"node", "object"}, shape) && role != "other" && client != "other" && client != "unauthenticated"
}

func clamp(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

// Bytes formats a byte count as herd's reports and decisions write it
// ("1.6 GiB").
func Bytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit && exp < 5; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", b/div, "KMGTPE"[exp])
}
