package nodesim

import (
	"context"
	"fmt"
	"time"
)

// Tally summarises repeated requests.
type Tally struct {
	// Requests is how many requests got a response.
	Requests int
	// Codes counts responses by status code.
	Codes map[int]int
	// Errors counts requests that got no response (the first is in Repeat's
	// error when the loop ended because of it).
	Errors int
}

// Repeat calls fn every interval (the first call at once) until ctx ends or
// n calls have been made (n <= 0: until ctx ends) — a raw relist loop at an
// exact pace, unlike an Agent whose reflector backs off. It returns what the
// calls got; a request error does not stop the loop, but ctx ending does and
// is not an error.
func Repeat(ctx context.Context, interval time.Duration, n int, fn func(context.Context) (Result, error)) (Tally, error) {
	tally := Tally{Codes: map[int]int{}}
	if interval <= 0 {
		return tally, fmt.Errorf("repeat: interval must be positive, got %v", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var firstErr error
	for i := 0; n <= 0 || i < n; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return tally, firstErr
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return tally, firstErr
		}
		res, err := fn(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return tally, firstErr
		case err != nil:
			tally.Errors++
			if firstErr == nil {
				firstErr = err
			}
		default:
			tally.Requests++
			tally.Codes[res.Code]++
		}
	}
	return tally, firstErr
}
