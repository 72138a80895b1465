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
// Lease age, and whether it is a ghost (SPEC §3.2). Until the informers have
// synced, and for Grace after, nobody is a ghost: an empty cache must not
// turn every kubelet into one; nor is an instance first seen less than Grace
// ago, whose Node may still be registering. The ledger asks for every
// host-network instance on every scrape: one read lock, a few map lookups,
// no allocation.
func (v *View) Judge(w *accounting.InstanceWindow, now int64) accounting.NodeVerdict {
	var out accounting.NodeVerdict
	v.mu.RLock()
	syncedAt := v.syncedAt
	_, ipKnown := v.byIP[w.SourceIP]
	if w.Node != "" {
		_, out.NodeExists = v.addrs[w.Node]
		var renewed time.Time
		if renewed, out.HasLease = v.renewed[w.Node]; out.HasLease {
			out.LeaseAge = time.Duration(now - renewed.UnixNano())
		}
	}
	v.mu.RUnlock()
	if syncedAt.IsZero() {
		return accounting.NodeVerdict{}
	}
	out.Synced = true
	settled := now-syncedAt.UnixNano() >= int64(v.opts.Grace) && now-w.FirstSeen >= int64(v.opts.Grace)
	if classify.HostAgent(w.Role) && settled {
		switch {
		case w.Role == classify.RoleKubelet && w.Attribution == accounting.AttrUsername && !out.NodeExists:
			out.GhostReason = ReasonNoSuchNode
		case w.SourceIP != "" && !ipKnown && !v.inControlPlane(w.SourceIP):
			out.GhostReason = ReasonUnknownSourceIP
		}
	}
	return out
}
