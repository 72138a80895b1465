package cluster

import (
	"time"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Ghost and stale reasons, the `reason` label values.
const (
	ReasonNoSuchNode      = "no_such_node"
	ReasonUnknownSourceIP = "unknown_source_ip"
	ReasonTooLargeRV      = "too_large_resource_version"
	ReasonRelistLoop      = "relist_loop"
)

// Thresholds decide staleness (SPEC §3.3): within the window, at least
// TooLarge "Too large resource version" answers or PodRelists relists of pods.
// Window is also how recently a ghost must have called to still be one: a
// ghost that went quiet (stopped, or quarantined and given up) must let its
// alert resolve. Zero means no recency condition.
type Thresholds struct {
	TooLarge   int
	PodRelists int
	Window     time.Duration
}

// Verdict is what the view concludes about one instance.
type Verdict struct {
	Ghost       bool   `json:"ghost"`
	GhostReason string `json:"ghostReason,omitempty"`
	Stale       bool   `json:"stale"`
	StaleReason string `json:"staleReason,omitempty"`
	// NodeExists is nil when the instance has no node or the view has not synced.
	NodeExists *bool `json:"nodeExists,omitempty"`
	// LeaseAgeSeconds is the age of the node's kubelet Lease, when there is one.
	LeaseAgeSeconds *float64 `json:"leaseAgeSeconds,omitempty"`
}

// hostAgent reports whether a role runs on the host network of a node, so
// that its identity and address must belong to a Node.
func hostAgent(r classify.Role) bool {
	return r == classify.RoleKubelet || r == classify.RoleKubeProxy || r == classify.RoleCNI
}

// Judge decides whether an instance is a ghost or a stale kubelet, and adds
// what /debug/clients shows (node existence, Lease age). Until the informers
// have synced, and for Grace after, nobody is a ghost: an empty cache must
// not turn every kubelet into one.
func (v *View) Judge(w *accounting.InstanceWindow, th Thresholds) Verdict {
	out, exists := v.judge(w, th, v.now())
	if w.Node != "" && v.Synced() {
		out.NodeExists = &exists
		if age, ok := v.LeaseAge(w.Node); ok {
			s := age.Seconds()
			out.LeaseAgeSeconds = &s
		}
	}
	return out
}

// judge is Judge without the debug extras: one read lock and two map
// lookups, because the collector calls it for every instance on every scrape.
func (v *View) judge(w *accounting.InstanceWindow, th Thresholds, now time.Time) (out Verdict, exists bool) {
	v.mu.RLock()
	syncedAt := v.syncedAt
	_, ipKnown := v.byIP[w.SourceIP]
	if w.Node != "" {
		_, exists = v.addrs[w.Node]
	}
	v.mu.RUnlock()
	if syncedAt.IsZero() {
		return out, false
	}
	settled := now.Sub(syncedAt) >= v.opts.Grace && now.UnixNano()-w.FirstSeen >= int64(v.opts.Grace)
	active := th.Window <= 0 || now.UnixNano()-w.LastSeen <= int64(th.Window)
	if hostAgent(w.Role) && settled && active {
		switch {
		case w.Role == classify.RoleKubelet && w.Attribution == accounting.AttrUsername && !exists:
			out.Ghost, out.GhostReason = true, ReasonNoSuchNode
		case w.SourceIP != "" && !ipKnown && !v.inControlPlane(w.SourceIP):
			out.Ghost, out.GhostReason = true, ReasonUnknownSourceIP
		}
	}
	if w.Role == classify.RoleKubelet && exists {
		switch {
		case w.TooLarge >= th.TooLarge:
			out.Stale, out.StaleReason = true, ReasonTooLargeRV
		case w.PodRelists >= th.PodRelists:
			out.Stale, out.StaleReason = true, ReasonRelistLoop
		}
	}
	return out, exists
}
