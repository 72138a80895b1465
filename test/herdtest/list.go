package herdtest

import "sync"

// List is what a fake or a wrapper saw, in order: goroutines Add to it and
// the test Takes what came since it last looked. The zero List is empty
// and ready.
type List[T any] struct {
	mu    sync.Mutex
	items []T
}

// Add appends v.
func (l *List[T]) Add(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, v)
}

// Take returns what was added since the last Take (nil when nothing was)
// and empties the list.
func (l *List[T]) Take() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.items
	l.items = nil
	return out
}
