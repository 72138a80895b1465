package main

import (
	"fmt"
	"io"

	"github.com/alecthomas/kingpin/v2"

	controlplane "github.com/herd-k8s/herd/manifests/control-plane"
)

// auditPolicyFlags are `herd audit-policy`'s flags (SPEC §2, §6).
type auditPolicyFlags struct {
	serviceAccounts *[]string
}

func addAuditPolicyFlags(cmd *kingpin.CmdClause) *auditPolicyFlags {
	f := &auditPolicyFlags{}
	f.serviceAccounts = cmd.Flag("service-account",
		"Also log list and watch by this node-side agent's service account, NAMESPACE:NAME (repeatable): a CNI agent the policy does not name, or one installed in another namespace.").
		PlaceHolder("NAMESPACE:NAME").Strings()
	return f
}

// runAuditPolicy prints the policy: manifests/control-plane/audit-policy.yaml
// byte for byte, plus the extra service accounts. Exit code 2 for a bad flag.
func runAuditPolicy(f *auditPolicyFlags, stdout, stderr io.Writer) int {
	var extra []controlplane.ServiceAccount
	for _, s := range *f.serviceAccounts {
		sa, err := controlplane.ParseServiceAccount(s)
		if err != nil {
			fmt.Fprintf(stderr, "herd audit-policy: --service-account: %v\n", err)
			return 2
		}
		extra = append(extra, sa)
	}
	policy, err := controlplane.AuditPolicy(extra)
	if err != nil {
		fmt.Fprintf(stderr, "herd audit-policy: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(policy); err != nil {
		fmt.Fprintf(stderr, "herd audit-policy: write policy: %v\n", err)
		return 1
	}
	return 0
}
