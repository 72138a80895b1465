// Package config reads `herd exporter --config`: strict YAML, where an
// unknown field is an error naming it, so a typo never silently falls back to
// a default on a 5,000-node cluster.
package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Config is the exporter's configuration file.
type Config struct {
	// Rules are extra classification rules, tried before the defaults.
	Rules      []classify.Rule `json:"rules,omitempty"`
	Accounting Accounting      `json:"accounting"`
	Ingest     Ingest          `json:"ingest"`
	Cluster    Cluster         `json:"cluster"`
}

// Cluster bounds the per-instance series of the cluster view.
type Cluster struct {
	// MaxGhostSeries caps herd_ghost_instance series (most recent first).
	MaxGhostSeries int `json:"maxGhostSeries"`
	// MaxStaleSeries caps herd_stale_kubelet series (worst first).
	MaxStaleSeries int `json:"maxStaleSeries"`
}

// Accounting tunes the ledger (see accounting.Config).
type Accounting struct {
	Window          model.Duration `json:"window"`
	RelistThreshold int            `json:"relistThreshold"`
	TopK            int            `json:"topK"`
	MaxInstances    int            `json:"maxInstances"`
	MaxResources    int            `json:"maxResources"`
	StaleTooLarge   int            `json:"staleTooLarge"`
	StalePodRelists int            `json:"stalePodRelists"`
}

// Ingest bounds the audit inputs.
type Ingest struct {
	MaxBodyBytes    int64          `json:"maxBodyBytes"`
	MaxEventBytes   int            `json:"maxEventBytes"`
	MaxInFlight     int            `json:"maxInFlight"`
	DedupWindow     model.Duration `json:"dedupWindow"`
	DedupMaxEntries int            `json:"dedupMaxEntries"`
}

// Default is the configuration with no file.
func Default() Config {
	a := accounting.DefaultConfig()
	return Config{
		Accounting: Accounting{
			Window: model.Duration(a.Window), RelistThreshold: a.RelistThreshold, TopK: a.TopK,
			MaxInstances: a.MaxInstances, MaxResources: a.MaxResources,
			StaleTooLarge: a.StaleTooLarge, StalePodRelists: a.StalePodRelists,
		},
		Cluster: Cluster{MaxGhostSeries: 50, MaxStaleSeries: 200},
		Ingest: Ingest{
			MaxBodyBytes: 16 << 20, MaxEventBytes: 256 << 10, MaxInFlight: 8,
			DedupWindow: model.Duration(2 * time.Minute), DedupMaxEntries: 1 << 20,
		},
	}
}

// Load reads path over the defaults and validates the result.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML over the defaults and validates it.
func Parse(b []byte) (Config, error) {
	c := Default()
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, err
	}
	return c, c.Validate()
}

// Validate checks ranges and the classification rules.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	a, in := c.Accounting, c.Ingest
	check(a.Window >= model.Duration(time.Minute), "accounting.window %s: must be at least 1m", a.Window)
	check(a.RelistThreshold >= 1, "accounting.relistThreshold %d: must be at least 1", a.RelistThreshold)
	check(a.TopK >= 1 && a.TopK <= 1000, "accounting.topK %d: must be 1..1000 (each is a series per resource)", a.TopK)
	check(a.MaxInstances >= 100, "accounting.maxInstances %d: must be at least 100", a.MaxInstances)
	check(a.MaxResources >= 8 && a.MaxResources <= 4096, "accounting.maxResources %d: must be 8..4096", a.MaxResources)
	check(a.StaleTooLarge >= 1, "accounting.staleTooLarge %d: must be at least 1", a.StaleTooLarge)
	check(a.StalePodRelists >= 1, "accounting.stalePodRelists %d: must be at least 1", a.StalePodRelists)
	check(in.MaxBodyBytes >= 64<<10, "ingest.maxBodyBytes %d: must be at least 65536", in.MaxBodyBytes)
	check(in.MaxEventBytes >= 4<<10 && int64(in.MaxEventBytes) <= in.MaxBodyBytes, "ingest.maxEventBytes %d: must be 4096..maxBodyBytes", in.MaxEventBytes)
	check(in.MaxInFlight >= 1, "ingest.maxInFlight %d: must be at least 1", in.MaxInFlight)
	check(in.DedupWindow >= model.Duration(10*time.Second), "ingest.dedupWindow %s: must be at least 10s", in.DedupWindow)
	check(in.DedupMaxEntries >= 1000, "ingest.dedupMaxEntries %d: must be at least 1000", in.DedupMaxEntries)
	check(c.Cluster.MaxGhostSeries >= 1 && c.Cluster.MaxGhostSeries <= 10000, "cluster.maxGhostSeries %d: must be 1..10000", c.Cluster.MaxGhostSeries)
	check(c.Cluster.MaxStaleSeries >= 1 && c.Cluster.MaxStaleSeries <= 10000, "cluster.maxStaleSeries %d: must be 1..10000", c.Cluster.MaxStaleSeries)
	if _, err := classify.New(c.Rules); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// LedgerConfig is the accounting section as the ledger takes it.
func (c Config) LedgerConfig() accounting.Config {
	a := c.Accounting
	return accounting.Config{
		Window: time.Duration(a.Window), RelistThreshold: a.RelistThreshold, TopK: a.TopK,
		MaxInstances: a.MaxInstances, MaxResources: a.MaxResources,
		StaleTooLarge: a.StaleTooLarge, StalePodRelists: a.StalePodRelists,
	}
}
