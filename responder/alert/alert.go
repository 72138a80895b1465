// Package alert is what the responder acts on: one alert of an Alertmanager
// notification, and the mark of an error that a later delivery may fix. The
// HTTP receiver (responder/webhook) produces alerts; dispatch and the
// actions consume them. Neither side imports the other.
package alert

import (
	"errors"
	"time"
)

// Statuses.
const (
	StatusFiring   = "firing"
	StatusResolved = "resolved"
)

// Alert is one alert of a notification, with what the notification says
// about the group it came in.
type Alert struct {
	// Status is StatusFiring or StatusResolved.
	Status      string
	Labels      map[string]string
	Annotations map[string]string
	StartsAt    time.Time
	// EndsAt is zero while the alert fires (Alertmanager hides a future
	// end) and the resolve time once it resolved.
	EndsAt       time.Time
	Fingerprint  string
	GeneratorURL string

	// GroupKey identifies the aggregation group, e.g.
	// `{}:{alertname="HerdStaleKubelet"}`.
	GroupKey string
	// Receiver is the Alertmanager receiver's name.
	Receiver string
	// TruncatedAlerts is how many alerts of the group Alertmanager left out
	// of this message (webhook_configs max_alerts). When it is not 0 the
	// message does not show the whole group: the absence of an alert from
	// it, or a "resolved" group status, is no evidence of anything.
	TruncatedAlerts uint64
	// ExternalURL is the Alertmanager's.
	ExternalURL string
}

// Name is the alertname label.
func (a Alert) Name() string { return a.Labels["alertname"] }

// Firing reports whether the alert fires.
func (a Alert) Firing() bool { return a.Status == StatusFiring }

// ErrTransient marks an error worth a retry: the webhook answers 503 and
// Alertmanager sends the message again. Wrap it (Transient, or
// fmt.Errorf("...: %w", ErrTransient)) only for failures that a later
// delivery can fix, such as the Kubernetes API being unavailable.
var ErrTransient = errors.New("transient")

// Transient marks err as transient (errors.Is(err, ErrTransient)); nil
// stays nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return transientError{err}
}

type transientError struct{ err error }

func (e transientError) Error() string        { return e.err.Error() }
func (e transientError) Unwrap() []error      { return []error{e.err, ErrTransient} }
func (e transientError) Is(target error) bool { return target == ErrTransient }
