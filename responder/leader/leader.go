// Package leader elects one acting responder among its replicas with a
// coordination.k8s.io Lease (client-go's leaderelection). Only the leader
// acts and reports ready; the others answer 503 so that Alertmanager
// retries, through the Service, to the leader.
//
// A leader that loses its Lease (it could not renew within RenewDeadline)
// stops acting at once; the actions also check IsLeader right before every
// write, and their writes carry resourceVersion preconditions or are
// server-side applies, so a deposed leader's late write cannot act twice.
// On shutdown the caller cancels the election only after in-flight
// actions have finished; the Lease is then released so that the other
// replica takes over without waiting out LeaseDuration.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options configure an election.
type Options struct {
	Namespace, Name, Identity string
	// LeaseDuration, RenewDeadline, RetryPeriod: client-go's meanings;
	// defaults 15s, 10s, 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
	Registerer                                prometheus.Registerer
}

// Elector runs the election and says whether this replica leads.
type Elector struct {
	opts    Options
	client  kubernetes.Interface
	leading atomic.Bool
	gauge   prometheus.Gauge
}

// New checks opts and returns an Elector; Run runs it.
func New(client kubernetes.Interface, opts Options) (*Elector, error) {
	if opts.Namespace == "" || opts.Name == "" || opts.Identity == "" {
		return nil, fmt.Errorf("leader election needs a namespace, a Lease name and an identity (got %q, %q, %q)", opts.Namespace, opts.Name, opts.Identity)
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = 10 * time.Second
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = 2 * time.Second
	}
	if !(opts.LeaseDuration > opts.RenewDeadline && opts.RenewDeadline > opts.RetryPeriod && opts.RetryPeriod > 0) {
		return nil, fmt.Errorf("leader election: want lease-duration (%s) > renew-deadline (%s) > retry-period (%s) > 0", opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Elector{opts: opts, client: client, gauge: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "herd_responder_leader",
		Help: "1 while this replica holds the leader Lease and acts, else 0.",
	})}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(e.gauge); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// IsLeader reports whether this replica holds the Lease.
func (e *Elector) IsLeader() bool { return e.leading.Load() }

// Identity is this replica's name in the Lease.
func (e *Elector) Identity() string { return e.opts.Identity }

// Run campaigns until ctx ends, again after every lost term. When ctx
// ends while leading, the Lease is released.
func (e *Elector) Run(ctx context.Context) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.opts.Namespace, Name: e.opts.Name},
		Client:     e.client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.opts.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   e.opts.LeaseDuration,
			RenewDeadline:   e.opts.RenewDeadline,
			RetryPeriod:     e.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            e.opts.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					e.leading.Store(true)
					e.gauge.Set(1)
					e.opts.Logger.Info("leading: this replica acts on alerts", "lease", e.opts.Namespace+"/"+e.opts.Name, "identity", e.opts.Identity)
				},
				OnStoppedLeading: func() {
					e.leading.Store(false)
					e.gauge.Set(0)
					e.opts.Logger.Info("not leading", "lease", e.opts.Namespace+"/"+e.opts.Name, "identity", e.opts.Identity)
				},
				OnNewLeader: func(id string) {
					if id != e.opts.Identity {
						e.opts.Logger.Info("another replica leads", "leader", id)
					}
				},
			},
		})
		if err != nil { // checked in New; a config error here is a bug
			e.opts.Logger.Error("leader election", "err", err)
			return
		}
		le.Run(ctx)
		e.leading.Store(false)
		e.gauge.Set(0)
		select {
		case <-ctx.Done():
		case <-time.After(e.opts.RetryPeriod):
		}
	}
}
