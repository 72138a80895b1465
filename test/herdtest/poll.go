package herdtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Interval is how often Poll and Wait try again.
const Interval = 250 * time.Millisecond

// Poll calls check every Interval until it returns nil. It gives up when
// ctx ends or timeout passes, with an error naming what it waited for and
// check's last error.
func Poll(ctx context.Context, timeout time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		last := check(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %v waiting for %s: %w", timeout, what, last)
		case <-time.After(Interval):
		}
	}
}

var errNotYet = errors.New("not yet")

// Wait polls cond until it holds, and fails the test (t.Fatal) when timeout
// passes or the test's context ends first.
func Wait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Poll(t.Context(), timeout, what, func(context.Context) error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Background runs fn in a goroutine until the returned stop is called or
// ctx ends; stop cancels fn's context and waits for fn to return (a load
// loop, a progress printer). stop is safe to call twice.
func Background(ctx context.Context, fn func(ctx context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// Every calls fn every interval, the first time after one interval, until
// ctx ends.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}
