package cluster

import (
	"time"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Ghost reasons, the `reason` label of herd_ghost_instance.
const (
	ReasonNoSuchNode      = "no_such_node"
	ReasonUnknownSourceIP = "unknown_source_ip"
)

var _ accounting.Judge = (*View)(nil)

// Judge implements accounting.Judge: whether the instance's node exists, its
// Lease age, and whether it is a ghost (SPEC §3.2):
//
//   - no_such_node: the apiserver vouches for the instance's node — a
//     system:node:NAME kubelet, or a pod-bound token naming its node — and
//     that node is not a Node;
//   - unknown_source_ip: its trusted source address is no Node's and in no
//     control-plane CIDR, unless its identity already proves a live node (a
//     vouched node that exists and whose Lease is fresh): NAT, multi-homed
//     nodes and IPv4/IPv6 pairs are normal, and an address is weaker
//     evidence than an identity.
//
// Until the informers have synced, and for Grace after, nobody is a ghost:
// an empty cache must not turn every kubelet into one; nor is an instance
// first seen less than Grace ago, whose Node may still be registering. The
// ledger asks for every host-network instance on every scrape: one read
// lock, a few map lookups, no allocation.
func (v *View) Judge(w *accounting.InstanceWindow, now int64) accounting.NodeVerdict {
	var out accounting.NodeVerdict
	v.mu.RLock()
	syncedAt, g := v.syncedAt, v.gen
	_, ipKnown := g.byIP[w.SourceIP]
	if w.Node != "" {
		_, out.NodeExists = g.addrs[w.Node]
		var renewed time.Time
		if renewed, out.HasLease = g.renewed[w.Node]; out.HasLease {
			out.LeaseAge = time.Duration(now - renewed.UnixNano())
		}
	}
	v.mu.RUnlock()
	if syncedAt.IsZero() {
		return accounting.NodeVerdict{}
	}
	out.Synced = true
	settled := now-syncedAt.UnixNano() >= int64(v.opts.Grace) && now-w.FirstSeen >= int64(v.opts.Grace)
	vouched := w.Attribution == accounting.AttrToken || w.Role == classify.RoleKubelet && w.Attribution == accounting.AttrUsername
	live := vouched && out.NodeExists && out.HasLease && out.LeaseAge <= v.opts.LeaseFresh
	if classify.HostAgent(w.Role) && settled {
		switch {
		case vouched && !out.NodeExists:
			out.GhostReason = ReasonNoSuchNode
		case !live && w.SourceIP != "" && !ipKnown && !v.inControlPlane(w.SourceIP):
			out.GhostReason = ReasonUnknownSourceIP
		}
	}
	return out
}
