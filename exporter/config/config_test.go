package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/ingest"
)

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(`
rules:
- role: cni
  client: my-cni
  serviceAccount: net:agent
accounting:
  window: 5m
  topK: 50
ingest:
  maxInFlight: 4
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Accounting.Window != model.Duration(5*time.Minute) || c.Accounting.TopK != 50 || c.Ingest.MaxInFlight != 4 {
		t.Errorf("parsed %+v", c)
	}
	// Unset fields keep their defaults.
	if c.Accounting.RelistThreshold != 3 || c.Ingest.MaxBodyBytes != 16<<20 {
		t.Errorf("defaults lost: %+v", c)
	}
	if got := time.Duration(c.Accounting.Window); got != 5*time.Minute {
		t.Errorf("ledger window = %v", got)
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct{ name, yaml, err string }{
		{"unknown field", "accounting:\n  windw: 5m\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "windw"`},
		{"unknown top-level", "acounting: {}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "acounting"`},
		{"bad duration", "accounting:\n  window: 5 minutes\n", `error unmarshaling JSON: while decoding JSON: unknown unit " minutes" in duration "5 minutes"`},
		{"number duration", "accounting:\n  window: 300\n", `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal number into Go struct field Config.accounting.window of type string`},
		{"window too short", "accounting:\n  window: 5s\n", "accounting.window 5s: must be at least 10s"},
		{"topK zero", "accounting:\n  topK: 0\n", "accounting.topK 0: must be 1..1000 (each is a series per stream)"},
		{"ghost cap zero", "accounting:\n  maxGhostSeries: 0\n", "accounting.maxGhostSeries 0: must be 1..10000"},
		{"live window shorter than a watch", "accounting:\n  liveWindow: 30s\n", "accounting.liveWindow 30s: must be 1m..24h (longer than the clients' watch timeout, 5-10m with client-go)\naccounting.waveWindow 1m: must be at least 10s and shorter than accounting.liveWindow (30s)"},
		{"wave window as long as the live one", "accounting:\n  liveWindow: 5m\n  waveWindow: 5m\n", "accounting.waveWindow 5m: must be at least 10s and shorter than accounting.liveWindow (5m)"},
		{"subjects cap", "accounting:\n  maxSubjects: 101\n", "accounting.maxSubjects 101: must be 1..100"},
		{"forecast series cap", "accounting:\n  maxStampedeSeries: 0\n", "accounting.maxStampedeSeries 0: must be 1..20000"},
		{"old cluster section, bad value", "cluster:\n  maxStaleSeries: 20000\n", "accounting.maxStaleSeries 20000: must be 1..10000"},
		{"old cluster section, unknown field", "cluster:\n  maxGhosts: 1\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "maxGhosts"`},
		{"two errors", "accounting:\n  topK: 0\ningest:\n  maxInFlight: 0\n", "accounting.topK 0: must be 1..1000 (each is a series per stream)\ningest.maxInFlight 0: must be at least 1"},
		{"bad rule", "rules:\n- role: cni\n  client: x\n", "rules[0]: set at least one of username, usernamePrefix, serviceAccount, userAgentPrefix"},
		{"not yaml", "accounting: [\n", "error converting YAML to JSON: yaml: line 1: did not find expected node content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil || err.Error() != tc.err {
				t.Errorf("error = %v\nwant    %s", err, tc.err)
			}
		})
	}
}

func TestLoadNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "herd.yaml")
	os.WriteFile(p, []byte("bogus: 1\n"), 0o644)
	_, err := Load(p)
	want := "config " + p + `: error unmarshaling JSON: while decoding JSON: json: unknown field "bogus"`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("missing file: no error")
	}
}

// Each setting has one default, owned by the package it configures: the
// file's defaults are those values, not copies of them.
func TestDefaultsHaveOneSource(t *testing.T) {
	c := Default()
	if !reflect.DeepEqual(c.Accounting, accounting.DefaultConfig()) {
		t.Errorf("accounting defaults %+v, want accounting.DefaultConfig() %+v", c.Accounting, accounting.DefaultConfig())
	}
	if c.Ingest.MaxBodyBytes != ingest.DefaultMaxBodyBytes || c.Ingest.MaxInFlight != ingest.DefaultMaxInFlight || c.Ingest.MaxEventBytes != audit.DefaultMaxEventBytes {
		t.Errorf("ingest defaults %+v differ from exporter/ingest and exporter/audit's", c.Ingest)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	parsed, err := Parse(nil)
	if err != nil || !reflect.DeepEqual(parsed, c) {
		t.Errorf("an empty file = %+v, %v; want the defaults", parsed, err)
	}
}

// The series caps moved from `cluster` to `accounting`; files written for
// the old layout keep their meaning.
func TestDeprecatedClusterSection(t *testing.T) {
	c, err := Parse([]byte("cluster:\n  maxStaleSeries: 300\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Accounting.MaxStaleSeries != 300 || c.Accounting.MaxGhostSeries != accounting.DefaultConfig().MaxGhostSeries || c.Cluster != nil {
		t.Errorf("parsed %+v", c)
	}
}
