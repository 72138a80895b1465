package accounting

// watchSet remembers, per shard, the watches counted at ResponseComplete
// while no ResponseStarted had been seen (Ledger.countWatch): a bounded
// set, the last watchSetSize keys, allocated on first use. Only a policy
// that starts writing ResponseStarted after herd counted watches without it
// ever asks: a watch that fell out of the set is then counted twice, never
// zero times.
type watchSet struct {
	keys map[uint64]struct{}
	ring []uint64
	next int
}

// watchSetSize bounds each shard's set: 16 × 1,024 watches counted at
// ResponseComplete whose ResponseStarted may still come.
const watchSetSize = 1024

func (w *watchSet) add(k uint64) {
	if w.keys == nil {
		w.keys = make(map[uint64]struct{}, watchSetSize)
		w.ring = make([]uint64, 0, watchSetSize)
	}
	if _, ok := w.keys[k]; ok {
		return
	}
	if len(w.ring) < watchSetSize {
		w.ring = append(w.ring, k)
	} else {
		delete(w.keys, w.ring[w.next])
		w.ring[w.next] = k
		w.next = (w.next + 1) % watchSetSize
	}
	w.keys[k] = struct{}{}
}

func (w *watchSet) has(k uint64) bool {
	_, ok := w.keys[k]
	return ok
}
