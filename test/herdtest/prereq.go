package herdtest

import (
	"sync"
	"testing"
)

// Prereq is a stage of a scenario that later steps build on: "two replicas
// started, one leads", "the storm stopped". A scenario test sets up its
// stack once and runs each behaviour as a subtest (t.Run) that first Needs
// the stages it depends on. Run whole, the test performs every stage once,
// in order; run for one step (go test -run 'TestX/one_step'), it performs
// only the stages that step needs, which is what makes a behaviour
// runnable alone.
//
// A stage runs with the t of the step that first needs it, so its failure
// fails that step; when it could not finish (t.Fatal), later steps that need
// it fail at once, naming it.
// Whatever outlives the step (processes, clients) must be owned by the
// stack or the top-level test, not by that t.
type Prereq struct {
	name string
	act  func(t *testing.T)

	mu     sync.Mutex
	ran    bool
	failed bool
}

// NewPrereq names a stage and what it does.
func NewPrereq(name string, act func(t *testing.T)) *Prereq {
	return &Prereq{name: name, act: act}
}

// Need runs the stage unless it has run, and fails t if it failed.
func (p *Prereq) Need(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ran {
		if p.failed {
			t.Fatalf("needs %q, which failed earlier", p.name)
		}
		return
	}
	p.ran, p.failed = true, true
	done := false
	defer func() {
		// t.FailNow in act unwinds through here (runtime.Goexit). An
		// Errorf does not: the stage happened, with a finding.
		p.failed = !done
	}()
	p.act(t)
	done = true
}
