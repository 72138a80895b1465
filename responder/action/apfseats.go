package action

import (
	"fmt"
	"math"
	"sort"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"k8s.io/utils/ptr"

	"github.com/herd-k8s/herd/responder/evidence"
)

// APF's seat arithmetic, as kube-apiserver 1.36 does it, for protect: how
// many seats a priority level gets from its shares, and how many LISTs of a
// given width it then runs at once.
//
// k8s.io/apiserver@v0.36.3/pkg/util/flowcontrol/apf_controller.go,
// finishQueueSetReconfigsLocked:
//
//	nominalCL = ceil(serverCL × shares / Σ shares of every level)
//	maxSeats  = max(1, min(ceil(0.15 × nominalCL), nominalCL / handSize))   (integer division)
//
// where serverCL is --max-requests-inflight + --max-mutating-requests-inflight
// (600 by default) and Σ counts every level, exempt included (plSpecCommons:
// an Exempt level's shares default to 0). A level with lendablePercent 0
// and borrowingLimitPercent 0 runs exactly nominalCL seats. A LIST's width
// is its size-based estimate (request/list_work_estimator.go: the forecast's
// herd:stampede_list_seats) capped at the level's maxSeats, so a small level
// charges a big LIST less than a big level does, and runs more of them at
// once than nominalCL / listSeats suggests.

// defaultLimitedShares is nominalConcurrencyShares of a Limited level that
// does not set it (k8s.io/kubernetes@v1.36.3/pkg/apis/flowcontrol/v1/
// defaults.go); the apiserver stores the default, so only hand-made objects
// lack it.
const defaultLimitedShares = 30

// levelShares is a level's nominalConcurrencyShares as APF counts them.
func levelShares(pl *flowcontrolv1.PriorityLevelConfiguration) float64 {
	switch {
	case pl.Spec.Limited != nil:
		return float64(ptr.Deref(pl.Spec.Limited.NominalConcurrencyShares, defaultLimitedShares))
	case pl.Spec.Exempt != nil:
		return float64(ptr.Deref(pl.Spec.Exempt.NominalConcurrencyShares, 0))
	}
	return 0
}

// nominalSeats is the nominal concurrency limit of a level with shares
// among levels whose shares sum to sum (its own included).
func nominalSeats(serverCL int, shares, sum float64) int {
	if sum <= 0 {
		return 0
	}
	return int(math.Ceil(float64(serverCL) * shares / sum))
}

// maxListWidth is the most seats one request may take in a queuing level
// of nominal seats (maxSeats above).
func maxListWidth(nominal int, handSize int32) int {
	if handSize < 1 {
		handSize = 1
	}
	return max(1, min(int(math.Ceil(float64(nominal)*0.15)), int(int32(nominal)/handSize)))
}

// admittedLists is how many LISTs of listSeats seats a bounded level of
// nominal seats runs at once.
func admittedLists(nominal int, handSize int32, listSeats int) int {
	if nominal <= 0 {
		return 0
	}
	w := min(max(listSeats, 1), maxListWidth(nominal, handSize))
	return nominal / w
}

// serverConcurrency infers each apiserver's serverCL from its nominal seats
// per level (apiserver_flowcontrol_nominal_limit_seats) and the levels'
// shares: a level of shares S with N nominal seats says
// (N−1)·Σ/S < serverCL ≤ N·Σ/S, and the levels together pin it down to a
// few values (600 and 601 may give every level the same seats). It returns
// the largest value that fits, of the apiserver where that is largest: the
// most seats, the worst case for a peak. An error says no apiserver's
// seats agree with the levels (one changed since Prometheus last scraped).
func serverConcurrency(samples []evidence.Sample, levels map[string]*flowcontrolv1.PriorityLevelConfiguration) (int, error) {
	shares := map[string]float64{}
	sum := 0.0
	for _, pl := range levels {
		s := levelShares(pl)
		shares[pl.Name] = s
		sum += s
	}
	if sum <= 0 {
		return 0, fmt.Errorf("the cluster's priority levels have no shares")
	}
	// One apiserver's series share every label but priority_level.
	byServer := map[string]map[string]float64{}
	for _, s := range samples {
		level := s.Labels["priority_level"]
		if level == "" {
			continue
		}
		k := serverKey(s.Labels)
		if byServer[k] == nil {
			byServer[k] = map[string]float64{}
		}
		byServer[k][level] = s.Value
	}
	if len(byServer) == 0 {
		return 0, fmt.Errorf("Prometheus has no apiserver_flowcontrol_nominal_limit_seats: it must scrape the apiservers")
	}
	best := 0
	var disagree []string
	for _, k := range sortedKeys(byServer) {
		lo, hi, n := 0.0, math.Inf(1), 0
		for level, seats := range byServer[k] {
			s, ok := shares[level]
			if !ok || s <= 0 {
				continue
			}
			lo = max(lo, (seats-1)*sum/s)
			hi = min(hi, seats*sum/s)
			n++
		}
		cl := math.Floor(hi + 1e-9)
		if n == 0 || cl <= lo+1e-9 || cl < 1 {
			disagree = append(disagree, k)
			continue
		}
		best = max(best, int(cl))
	}
	if best == 0 {
		return 0, fmt.Errorf("the nominal seats of apiserver %s do not follow from the shares of the cluster's %d priority levels (Σ %g): a level changed since Prometheus last scraped", strings.Join(disagree, ", "), len(levels), sum)
	}
	return best, nil
}

func serverKey(l map[string]string) string {
	var parts []string
	for k, v := range l {
		if k != "priority_level" && k != "__name__" {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "{}"
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
