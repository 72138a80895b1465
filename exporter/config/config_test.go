package config

import (
	"os"

	"github.com/prometheus/common/model"
	"path/filepath"
	"testing"
	"time"
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
	if got := c.LedgerConfig().Window; got != 5*time.Minute {
		t.Errorf("ledger window = %v", got)
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct{ name, yaml, err string }{
		{"unknown field", "accounting:\n  windw: 5m\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "windw"`},
		{"unknown top-level", "acounting: {}\n", `error unmarshaling JSON: while decoding JSON: json: unknown field "acounting"`},
		{"bad duration", "accounting:\n  window: 5 minutes\n", `error unmarshaling JSON: while decoding JSON: unknown unit " minutes" in duration "5 minutes"`},
		{"number duration", "accounting:\n  window: 300\n", `error unmarshaling JSON: while decoding JSON: json: cannot unmarshal number into Go struct field Accounting.accounting.window of type string`},
		{"window too short", "accounting:\n  window: 10s\n", "accounting.window 10s: must be at least 1m"},
		{"topK zero", "accounting:\n  topK: 0\n", "accounting.topK 0: must be 1..1000 (each is a series per resource)"},
		{"two errors", "accounting:\n  topK: 0\ningest:\n  maxInFlight: 0\n", "accounting.topK 0: must be 1..1000 (each is a series per resource)\ningest.maxInFlight 0: must be at least 1"},
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
