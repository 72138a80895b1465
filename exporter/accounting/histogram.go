package accounting

// IntervalBuckets are the upper bounds, in seconds, of herd_relist_interval_seconds.
// A healthy reflector relists rarely (hours, or never); a storm relists every
// few seconds. The buckets separate the two by orders of magnitude.
var IntervalBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600}

// histogram is a cumulative-ready bucket count, kept without client_golang so
// that observing is a few adds under the ledger's lock.
type histogram struct {
	counts [12]uint64 // len(IntervalBuckets)+1; the last is +Inf
	count  uint64
	sum    float64
}

func (h *histogram) observe(v float64) {
	i := 0
	for i < len(IntervalBuckets) && v > IntervalBuckets[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.sum += v
}

// cumulative returns the Prometheus bucket map (upper bound → count ≤ bound).
func (h *histogram) cumulative() map[float64]uint64 {
	m := make(map[float64]uint64, len(IntervalBuckets))
	var acc uint64
	for i, ub := range IntervalBuckets {
		acc += h.counts[i]
		m[ub] = acc
	}
	return m
}
