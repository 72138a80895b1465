package accounting

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/common/model"
)

// Config bounds and tunes a Ledger. It is the `accounting` section of
// `herd exporter --config` as it is written (strict YAML, exporter/config):
// the one place each setting and its default is defined.
type Config struct {
	// Window is W: the span of the windowed signals (relisting instances,
	// top-K, TokenReview nodes, stale kubelets, ghosts' recency).
	Window model.Duration `json:"window"`
	// RelistThreshold is N: an instance relisting a resource at least N times
	// in W counts in herd_relisting_instances.
	RelistThreshold int `json:"relistThreshold"`
	// TopK is how many instances get per-node series.
	TopK int `json:"topK"`
	// MaxInstances caps the instance table; the least recently seen are
	// evicted first.
	MaxInstances int `json:"maxInstances"`
	// MaxResources caps distinct resource label values; the rest are "other".
	MaxResources int `json:"maxResources"`
	// StaleTooLarge and StalePodRelists are the stale-kubelet thresholds
	// within W (SPEC §3.3).
	StaleTooLarge   int `json:"staleTooLarge"`
	StalePodRelists int `json:"stalePodRelists"`
	// MaxGhostSeries and MaxStaleSeries cap the per-instance verdict series
	// (herd_ghost_instance, herd_stale_kubelet) and so the instances flagged
	// for per-node relist series, so that a mass event — every kubelet
	// stale after an etcd restore — cannot make series follow cluster size.
	// Counts are exported whole.
	MaxGhostSeries int `json:"maxGhostSeries"`
	MaxStaleSeries int `json:"maxStaleSeries"`
}

// DefaultConfig is what herd runs with when nothing is configured.
func DefaultConfig() Config {
	return Config{
		Window:          model.Duration(10 * time.Minute),
		RelistThreshold: 3,
		TopK:            20,
		MaxInstances:    50000,
		MaxResources:    256,
		StaleTooLarge:   3,
		StalePodRelists: 6,
		MaxGhostSeries:  50,
		MaxStaleSeries:  200,
	}
}

// Validate checks ranges; errors name the field as the config file does.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Window >= model.Duration(time.Minute), "accounting.window %s: must be at least 1m", c.Window)
	check(c.RelistThreshold >= 1, "accounting.relistThreshold %d: must be at least 1", c.RelistThreshold)
	check(c.TopK >= 1 && c.TopK <= 1000, "accounting.topK %d: must be 1..1000 (each is a series per resource)", c.TopK)
	check(c.MaxInstances >= 100, "accounting.maxInstances %d: must be at least 100", c.MaxInstances)
	check(c.MaxResources >= 8 && c.MaxResources <= 4096, "accounting.maxResources %d: must be 8..4096", c.MaxResources)
	check(c.StaleTooLarge >= 1, "accounting.staleTooLarge %d: must be at least 1", c.StaleTooLarge)
	check(c.StalePodRelists >= 1, "accounting.stalePodRelists %d: must be at least 1", c.StalePodRelists)
	check(c.MaxGhostSeries >= 1 && c.MaxGhostSeries <= 10000, "accounting.maxGhostSeries %d: must be 1..10000", c.MaxGhostSeries)
	check(c.MaxStaleSeries >= 1 && c.MaxStaleSeries <= 10000, "accounting.maxStaleSeries %d: must be 1..10000", c.MaxStaleSeries)
	return errors.Join(errs...)
}
