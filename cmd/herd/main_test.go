package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/common/version"
)

// runHerd runs herd's command line with args and returns what it wrote; an
// exit code other than wantCode fails the test.
func runHerd(t *testing.T, wantCode int, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != wantCode {
		t.Errorf("exit code %d, want %d (stderr %q)", code, wantCode, errOut.String())
	}
	return out.String(), errOut.String()
}

func TestRun(t *testing.T) {
	version.Version, version.Revision = "1.2.3", "abc1234"
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr string
	}{
		{name: "version", args: []string{"version"}, wantStdout: []string{"herd, version 1.2.3", "revision: abc1234", runtime.Version()}},
		{name: "help", args: []string{"--help"}, wantStdout: []string{"exporter", "responder", "analyze", "audit-policy", "version"}},
		{name: "no command", args: nil, wantCode: 2, wantStderr: "herd: command not specified (try herd --help)\n"},
		{name: "unknown command", args: []string{"bogus"}, wantCode: 2, wantStderr: "herd: expected command but got \"bogus\"\n"},
		{name: "responder without prometheus", args: []string{"responder"}, wantCode: 2,
			wantStderr: "herd responder: no --config: the defaults need --prometheus.url: prometheus.url: required, because routes[0] runs triage and herd re-verifies every alert from Prometheus before acting (set it here or with --prometheus.url)\n"},
		{name: "unknown flag", args: []string{"version", "--bogus"}, wantCode: 2, wantStderr: "herd: unknown long flag '--bogus'\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr := runHerd(t, tc.wantCode, tc.args...)
			for _, want := range tc.wantStdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if tc.wantStderr != "" && stderr != tc.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr, tc.wantStderr)
			}
		})
	}
}

// The exporter runs with GOGC=50 unless GOGC is set in its environment.
func TestExporterGCPercent(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	if p, ok := exporterGCPercent(env("")); !ok || p != 50 {
		t.Errorf("without GOGC: %d, %v; want 50, true", p, ok)
	}
	for _, v := range []string{"100", "off", "200"} {
		if _, ok := exporterGCPercent(env(v)); ok {
			t.Errorf("GOGC=%s: herd sets its own percentage, want the environment's", v)
		}
	}
}
