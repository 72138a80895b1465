package stack

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
)

// APIServerRSS is kube-apiserver's resident set size in bytes (0 when it
// is not running).
func (s *Stack) APIServerRSS() int64 {
	pid := s.CP.APIServerPid()
	if pid == 0 {
		return 0
	}
	rss, _ := hostinfo.RSS(pid)
	return rss
}

// MemSample is one RSS reading.
type MemSample struct {
	At  time.Time
	RSS int64
}

// MemWatch samples kube-apiserver's RSS at a fixed interval and kills it
// (SIGKILL, as the kernel's OOM killer would) when it exceeds a cap, so
// that a storm can never take the machine down.
type MemWatch struct {
	cap  int64
	stop func() // herdtest.Background's

	mu       sync.Mutex
	samples  []MemSample
	killedAt int64 // RSS when killed; 0 if not
}

// WatchAPIServer starts sampling every interval; capBytes <= 0 means no cap.
// Stop it when done.
func (s *Stack) WatchAPIServer(interval time.Duration, capBytes int64) *MemWatch {
	w := &MemWatch{cap: capBytes}
	sample := func() {
		if pid := s.CP.APIServerPid(); pid != 0 {
			if rss, err := hostinfo.RSS(pid); err == nil {
				w.record(pid, rss)
			}
		}
	}
	w.stop = herdtest.Background(context.Background(), func(ctx context.Context) {
		sample()
		herdtest.Every(ctx, interval, sample)
	})
	return w
}

func (w *MemWatch) record(pid int, rss int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, MemSample{At: time.Now(), RSS: rss})
	if w.cap > 0 && rss > w.cap && w.killedAt == 0 {
		// Only the apiserver this harness started (its pid), never by name.
		_ = syscall.Kill(pid, syscall.SIGKILL)
		w.killedAt = rss
	}
}

// Stop ends the sampling.
func (w *MemWatch) Stop() { w.stop() }

// Samples returns a copy of the readings so far.
func (w *MemWatch) Samples() []MemSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]MemSample(nil), w.samples...)
}

// KilledAt is the RSS at which the apiserver was killed (0: it was not).
func (w *MemWatch) KilledAt() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.killedAt
}

// Last is the latest reading (zero when none).
func (w *MemWatch) Last() MemSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) == 0 {
		return MemSample{}
	}
	return w.samples[len(w.samples)-1]
}

// Peak is the largest reading in [from, to) (zero times: unbounded).
func (w *MemWatch) Peak(from, to time.Time) MemSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	var peak MemSample
	for _, s := range w.samples {
		if (!from.IsZero() && s.At.Before(from)) || (!to.IsZero() && !s.At.Before(to)) {
			continue
		}
		if s.RSS > peak.RSS {
			peak = s
		}
	}
	return peak
}

// At is the last reading at or before t (the first one if none).
func (w *MemWatch) At(t time.Time) MemSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out MemSample
	for i, s := range w.samples {
		if i == 0 || !s.At.After(t) {
			out = s
		}
	}
	return out
}

// WaitForQuiet waits until the 1-minute load average is below max, checking
// every 15 s for at most wait, so that a measurement does not run while
// other work holds the machine's cores. It returns the load it settled for
// and whether it was below max.
func WaitForQuiet(ctx context.Context, max float64, wait time.Duration, log func(string)) (string, bool) {
	deadline := time.Now().Add(wait)
	for {
		v, line, err := hostinfo.LoadAverage()
		if err != nil {
			return "unknown", false
		}
		if v < max {
			return line, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return line, false
		}
		log(fmt.Sprintf("load average %s: waiting for the 1-minute figure to fall below %.1f", line, max))
		select {
		case <-ctx.Done():
			return line, false
		case <-time.After(15 * time.Second):
		}
	}
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
