package action

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/responder/evidence"
)

// protect's reading of the apiserver's seats; APF's seat arithmetic itself
// is apfguard's (LevelShares, NominalSeats, AdmittedLists).

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
		s := apfguard.LevelShares(pl)
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
	for _, k := range slices.Sorted(maps.Keys(byServer)) {
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
