package accounting

// buckets is how finely a sliding window is cut. Ten buckets of W/10 make a
// window accurate to 10 % of W in 22 bytes, whatever the event rate.
const buckets = 10

// window counts events over the last W in W/10 buckets. The zero value is an
// empty window. Counts saturate rather than wrap.
type window struct {
	newest int64 // index (time / width) of the newest bucket written
	counts [buckets]uint16
}

// slot maps a bucket index to its place in the ring; indexes of times
// before 1970 are negative, and Go's % keeps the sign.
func slot(idx int64) int64 { return (idx%buckets + buckets) % buckets }

func (w *window) add(t, width int64) {
	idx := t / width
	switch {
	case idx > w.newest:
		if idx-w.newest >= buckets {
			w.counts = [buckets]uint16{}
		} else {
			for i := w.newest + 1; i <= idx; i++ {
				w.counts[slot(i)] = 0
			}
		}
		w.newest = idx
	case idx <= w.newest-buckets:
		return // older than the window: a late event changes nothing now
	}
	if c := &w.counts[slot(idx)]; *c < ^uint16(0) {
		*c++
	}
}

// sum is the number of events in the window that ends at now. Buckets are
// walked without a division each: scrapes sum every stream of every
// instance.
func (w *window) sum(now, width int64) int {
	idx := now / width
	lo, hi := max(idx-buckets+1, w.newest-buckets+1), min(idx, w.newest)
	if lo > hi {
		return 0 // nothing written in this window (most idle instances)
	}
	total := 0
	for b, s := lo, slot(lo); b <= hi; b++ {
		total += int(w.counts[s])
		if s++; s == buckets {
			s = 0
		}
	}
	return total
}
