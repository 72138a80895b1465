package alert

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestTransient(t *testing.T) {
	if Transient(nil) != nil {
		t.Error("Transient(nil) is not nil")
	}
	base := errors.New("apiserver unavailable")
	err := Transient(base)
	if !errors.Is(err, ErrTransient) || !errors.Is(err, base) || err.Error() != base.Error() {
		t.Errorf("Transient(%v) = %v", base, err)
	}
	// Wrapped again, it stays transient; a plain error is not.
	if wrapped := fmt.Errorf("cordon n1: %w", err); !errors.Is(wrapped, ErrTransient) || !errors.Is(wrapped, base) {
		t.Errorf("wrapped: %v", wrapped)
	}
	if errors.Is(base, ErrTransient) || errors.Is(context.Canceled, ErrTransient) {
		t.Error("a plain error is transient")
	}
}

func TestAlert(t *testing.T) {
	a := Alert{Status: StatusFiring, Labels: map[string]string{"alertname": "HerdStaleKubelet"}}
	if a.Name() != "HerdStaleKubelet" || !a.Firing() {
		t.Errorf("%+v: name %q firing %v", a, a.Name(), a.Firing())
	}
	if (Alert{Status: StatusResolved}).Firing() || (Alert{}).Name() != "" {
		t.Error("a resolved or empty alert")
	}
}
