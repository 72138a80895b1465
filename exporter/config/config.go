// Package config reads `herd exporter --config`: strict YAML, where an
// unknown field is an error naming it, so a typo never silently falls back to
// a default on a 5,000-node cluster.
//
// Each section is decoded into the type of the part it configures
// (accounting.Config for `accounting`), over that type's one default
// (accounting.DefaultConfig, DefaultIngest), in the manner of
// blackbox_exporter: there is no second copy of a setting or its default.
package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/ingest"
)

// Config is the exporter's configuration file.
type Config struct {
	// Rules are extra classification rules, tried before the defaults.
	Rules      []classify.Rule   `json:"rules,omitempty"`
	Accounting accounting.Config `json:"accounting"`
	Ingest     Ingest            `json:"ingest"`
	// Cluster is the section maxGhostSeries and maxStaleSeries lived in
	// before they moved to accounting (the ledger's snapshot applies them
	// now). Still read, so existing files keep working; never written.
	Cluster *DeprecatedCluster `json:"cluster,omitempty"`
}

// DeprecatedCluster is the old `cluster` section; set values override
// accounting.maxGhostSeries and accounting.maxStaleSeries.
type DeprecatedCluster struct {
	MaxGhostSeries *int `json:"maxGhostSeries,omitempty"`
	MaxStaleSeries *int `json:"maxStaleSeries,omitempty"`
}

// Ingest bounds the audit inputs (exporter/ingest, exporter/audit).
type Ingest struct {
	MaxBodyBytes    int64          `json:"maxBodyBytes"`
	MaxEventBytes   int            `json:"maxEventBytes"`
	MaxInFlight     int            `json:"maxInFlight"`
	DedupWindow     model.Duration `json:"dedupWindow"`
	DedupMaxEntries int            `json:"dedupMaxEntries"`
}

// DefaultIngest is the ingest section with no file: the limits
// exporter/ingest and exporter/audit define (SPEC §3.1), and the dedup
// bounds.
var DefaultIngest = Ingest{
	MaxBodyBytes:    ingest.DefaultMaxBodyBytes,
	MaxEventBytes:   audit.DefaultMaxEventBytes,
	MaxInFlight:     ingest.DefaultMaxInFlight,
	DedupWindow:     model.Duration(2 * time.Minute),
	DedupMaxEntries: 1 << 20,
}

// Default is the configuration with no file.
func Default() Config {
	return Config{Accounting: accounting.DefaultConfig(), Ingest: DefaultIngest}
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
	if old := c.Cluster; old != nil {
		if old.MaxGhostSeries != nil {
			c.Accounting.MaxGhostSeries = *old.MaxGhostSeries
		}
		if old.MaxStaleSeries != nil {
			c.Accounting.MaxStaleSeries = *old.MaxStaleSeries
		}
		c.Cluster = nil
	}
	return c, c.Validate()
}

// Validate checks every section and the classification rules.
func (c Config) Validate() error {
	errs := []error{c.Accounting.Validate()}
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	in := c.Ingest
	check(in.MaxBodyBytes >= 64<<10, "ingest.maxBodyBytes %d: must be at least 65536", in.MaxBodyBytes)
	check(in.MaxEventBytes >= 4<<10 && int64(in.MaxEventBytes) <= in.MaxBodyBytes, "ingest.maxEventBytes %d: must be 4096..maxBodyBytes", in.MaxEventBytes)
	check(in.MaxInFlight >= 1, "ingest.maxInFlight %d: must be at least 1", in.MaxInFlight)
	check(in.DedupWindow >= model.Duration(10*time.Second), "ingest.dedupWindow %s: must be at least 10s", in.DedupWindow)
	check(in.DedupMaxEntries >= 1000, "ingest.dedupMaxEntries %d: must be at least 1000", in.DedupMaxEntries)
	if _, err := classify.New(c.Rules); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
