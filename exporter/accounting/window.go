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

// sum is the number of events in the window that ends at now.
func (w *window) sum(now, width int64) int {
	idx := now / width
	total := 0
	for b := idx - buckets + 1; b <= idx; b++ {
		if b > w.newest || b <= w.newest-buckets {
			continue // bucket not written, or holds an older lap's count
		}
		total += int(w.counts[slot(b)])
	}
	return total
}
