package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/herd-k8s/herd/test/herdtest"
)

// TestResponderCheck: --check validates the configuration and the flags
// and exits; a bad file exits 2 with one line naming the file and the
// problem.
func TestResponderCheck(t *testing.T) {
	file := func(name, content string) string { return herdtest.WriteTemp(t, name, content) }
	good := file("good.yaml", "dryRun: false\nprometheus: {url: http://prometheus:9090}\n")
	typo := file("typo.yaml", "dryRunn: false\nprometheus: {url: http://prometheus:9090}\n")
	unbounded := file("unbounded.yaml", "prometheus: {url: http://prometheus:9090}\nguards: {maxUnschedulableFraction: 1}\n")
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr []string
	}{
		{"valid file", []string{"responder", "--config", good, "--check"}, 0, "configuration OK: dryRun=false, 8 routes, prometheus http://prometheus:9090\n", nil},
		{"defaults and a flag", []string{"responder", "--prometheus.url", "http://p:9090", "--check"}, 0, "configuration OK: dryRun=true, 8 routes, prometheus http://p:9090\n", nil},
		{"flag overrides the file", []string{"responder", "--config", good, "--prometheus.url", "http://other:9090", "--check"}, 0, "configuration OK: dryRun=false, 8 routes, prometheus http://other:9090\n", nil},
		{"unknown field", []string{"responder", "--config", typo, "--check"}, 2, "", []string{"herd responder: config " + typo + ":", `unknown field "dryRunn"`}},
		{"acts on every node", []string{"responder", "--config", unbounded, "--check"}, 2, "", []string{"guards.maxUnschedulableFraction 1: must be more than 0 and less than 1"}},
		{"missing file", []string{"responder", "--config", filepath.Join(t.TempDir(), "none.yaml"), "--check"}, 2, "", []string{"herd responder: read config:", "no such file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr := runHerd(t, tc.wantCode, tc.args...)
			if stdout != tc.wantStdout {
				t.Errorf("stdout %q, want %q", stdout, tc.wantStdout)
			}
			for _, w := range tc.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
			if n := strings.Count(stderr, "\n"); n > 1 {
				t.Errorf("stderr has %d lines, want one: %q", n, stderr)
			}
		})
	}
}
