package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuditPolicyCommand: `herd audit-policy` prints the shipped file byte
// for byte (what SPEC §6 and issue 7 promise), extras land in the node-side
// agents' users list, and a bad extra is one line on stderr with exit 2.
func TestAuditPolicyCommand(t *testing.T) {
	shipped, err := os.ReadFile(filepath.Join("..", "..", "manifests", "control-plane", "audit-policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("shipped file", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := run([]string{"audit-policy"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
		if !bytes.Equal(stdout.Bytes(), shipped) {
			t.Fatalf("herd audit-policy differs from manifests/control-plane/audit-policy.yaml:\n%s", stdout.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("stderr: %q", stderr.String())
		}
	})

	t.Run("extras", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run([]string{"audit-policy", "--service-account", "net-system:my-cni", "--service-account=cilium:cilium"}, &stdout, &stderr)
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr.String())
		}
		out := stdout.String()
		want := "  - system:serviceaccount:kube-system:aws-node\n" +
			"  - system:serviceaccount:net-system:my-cni\n" +
			"  - system:serviceaccount:cilium:cilium\n" +
			"  # herd audit-policy --service-account"
		if !strings.Contains(out, want) {
			t.Fatalf("extras not appended to the node-side users list:\n%s", out)
		}
		// Only the two lines were added.
		if len(out) != len(shipped)+len("  - system:serviceaccount:net-system:my-cni\n  - system:serviceaccount:cilium:cilium\n") {
			t.Errorf("output has %d bytes, want the shipped %d plus the two lines", len(out), len(shipped))
		}
	})

	bad := []struct {
		args []string
		want string
	}{
		{[]string{"--service-account", "cilium"},
			`herd audit-policy: --service-account: service account "cilium": want NAMESPACE:NAME, e.g. kube-system:cilium`},
		{[]string{"--service-account", "*:cilium"},
			`herd audit-policy: --service-account: service account "*:cilium": audit policy users are exact names, so the namespace cannot be *; give each namespace the agent runs in`},
		{[]string{"--service-account", "kube-system:ok", "--service-account", "Net:agent"},
			`herd audit-policy: --service-account: service account "Net:agent": namespace "Net" is not a valid namespace name (a DNS-1123 label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)`},
		{[]string{"--service-account", "net:my_agent"},
			`herd audit-policy: --service-account: service account "net:my_agent": name "my_agent" is not a valid service account name (a DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.', starting and ending with a letter or digit)`},
		{[]string{"--service-account"},
			`herd: expected argument for flag '--service-account'`},
		{[]string{"extra-arg"},
			`herd: unexpected extra-arg`},
	}
	for _, tc := range bad {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"audit-policy"}, tc.args...), &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("a refused policy must print nothing, got %d bytes", stdout.Len())
			}
			if got := stderr.String(); got != tc.want+"\n" {
				t.Errorf("stderr = %q\nwant     %q", got, tc.want+"\n")
			}
		})
	}
}
