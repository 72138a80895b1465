package main

import (
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
		stdout, stderr := runHerd(t, 0, "audit-policy")
		if stdout != string(shipped) {
			t.Fatalf("herd audit-policy differs from manifests/control-plane/audit-policy.yaml:\n%s", stdout)
		}
		if stderr != "" {
			t.Errorf("stderr: %q", stderr)
		}
	})

	t.Run("extras", func(t *testing.T) {
		out, _ := runHerd(t, 0, "audit-policy", "--service-account", "net-system:my-cni", "--service-account=cilium:cilium")
		want := "  - system:serviceaccount:kube-system:aws-node\n" +
			"  - system:serviceaccount:net-system:my-cni\n" +
			"  - system:serviceaccount:cilium:cilium\n" +
			"  # herd audit-policy --service-account"
		// In both of the agents' rules: their lists and their watches.
		if strings.Count(out, want) != 2 {
			t.Fatalf("extras not appended to both node-side users lists:\n%s", out)
		}
		// Only the two lines were added, to each list.
		if len(out) != len(shipped)+2*len("  - system:serviceaccount:net-system:my-cni\n  - system:serviceaccount:cilium:cilium\n") {
			t.Errorf("output has %d bytes, want the shipped %d plus the two lines twice", len(out), len(shipped))
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
			stdout, stderr := runHerd(t, 2, append([]string{"audit-policy"}, tc.args...)...)
			if stdout != "" {
				t.Errorf("a refused policy must print nothing, got %d bytes", len(stdout))
			}
			if got := stderr; got != tc.want+"\n" {
				t.Errorf("stderr = %q\nwant     %q", got, tc.want+"\n")
			}
		})
	}
}
