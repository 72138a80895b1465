package drill

import (
	"bufio"
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	"k8s.io/client-go/kubernetes"
)

// APFWatch samples the apiserver's API Priority and Fairness state: how
// many requests each priority level executes and queues. It reads
// /debug/api_priority_and_fairness/dump_priority_levels (apf_controller_debug.go
// in k8s.io/apiserver@v0.36.3), a small table, as the admin, whose
// requests are exempt: the drill measures how many storm LISTs run at once
// without joining their queues.
type APFWatch struct {
	stop func() // herdtest.Background's

	mu      sync.Mutex
	samples []APFSample
}

// APFSample is one reading: executing and waiting requests by level.
type APFSample struct {
	At                 time.Time
	Executing, Waiting map[string]int
}

// WatchAPF starts sampling every interval until Stop.
func WatchAPF(admin kubernetes.Interface, interval time.Duration) *APFWatch {
	w := &APFWatch{}
	w.stop = herdtest.Background(context.Background(), func(ctx context.Context) {
		sample := func() {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			raw, err := admin.CoreV1().RESTClient().Get().AbsPath("/debug/api_priority_and_fairness/dump_priority_levels").DoRaw(rctx)
			rcancel()
			if err == nil {
				if s, ok := parseAPFDump(raw); ok {
					s.At = time.Now()
					w.mu.Lock()
					w.samples = append(w.samples, s)
					w.mu.Unlock()
				}
			}
		}
		sample()
		herdtest.Every(ctx, interval, sample)
	})
	return w
}

// parseAPFDump reads the table: a header row naming the columns, then one
// row per level.
func parseAPFDump(raw []byte) (APFSample, bool) {
	s := APFSample{Executing: map[string]int{}, Waiting: map[string]int{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	col := map[string]int{}
	for sc.Scan() {
		f := strings.FieldsFunc(sc.Text(), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
		if len(f) == 0 {
			continue
		}
		if len(col) == 0 {
			for i, name := range f {
				col[name] = i
			}
			if _, ok := col["ExecutingRequests"]; !ok {
				return s, false
			}
			continue
		}
		get := func(name string) int {
			i, ok := col[name]
			if !ok || i >= len(f) {
				return 0
			}
			n, _ := strconv.Atoi(f[i])
			return n
		}
		s.Executing[f[0]] = get("ExecutingRequests")
		s.Waiting[f[0]] = get("WaitingRequests")
	}
	return s, len(col) > 0
}

// Stop ends the sampling.
func (w *APFWatch) Stop() { w.stop() }

// Executing is the most and the mean requests level executed in [from, to).
func (w *APFWatch) Executing(level string, from, to time.Time) (most int, mean float64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, sum := 0, 0
	for _, s := range w.samples {
		if s.At.Before(from) || !s.At.Before(to) {
			continue
		}
		e := s.Executing[level]
		most, sum, n = max(most, e), sum+e, n+1
	}
	if n > 0 {
		mean = float64(sum) / float64(n)
	}
	return most, mean
}
