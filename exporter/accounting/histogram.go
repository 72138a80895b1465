package accounting

import "math/bits"

// IntervalBuckets are the upper bounds, in seconds, of herd_relist_interval_seconds.
// A healthy reflector relists rarely (hours, or never); a storm relists every
// few seconds. The buckets separate the two by orders of magnitude.
var IntervalBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600}

// histogram is a cumulative-ready bucket count, kept without client_golang so
// that observing is a few adds under a shard's lock. Its sum is kept in
// nanoseconds, in 128 bits: exact, so that it does not depend on the order
// in which concurrent batches and the ledger's shards add up (a float sum
// would), and wide enough for any interval two int64 timestamps make.
type histogram struct {
	counts         [12]uint64 // len(IntervalBuckets)+1; the last is +Inf
	count          uint64
	sumHi, sumLoNs uint64
}

// observe records an interval of d > 0 nanoseconds.
func (h *histogram) observe(d int64) {
	v := float64(d) / 1e9
	i := 0
	for i < len(IntervalBuckets) && v > IntervalBuckets[i] {
		i++
	}
	h.counts[i]++
	h.count++
	h.add(0, uint64(d))
}

func (h *histogram) add(hi, lo uint64) {
	var carry uint64
	h.sumLoNs, carry = bits.Add64(h.sumLoNs, lo, 0)
	h.sumHi += hi + carry
}

// sum is the sum of the observations, in seconds.
func (h *histogram) sum() float64 {
	return (float64(h.sumHi)*(1<<64) + float64(h.sumLoNs)) / 1e9
}

// merge adds o's observations to h (a snapshot sums the shards').
func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.count += o.count
	h.add(o.sumHi, o.sumLoNs)
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
