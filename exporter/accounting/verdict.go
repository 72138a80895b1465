package accounting

import (
	"time"

	"github.com/herd-k8s/herd/exporter/classify"
)

// InstanceWindow is an instance's identity and its windowed counts, as the
// cluster view needs them to call it a ghost, and as the stale-kubelet
// verdict reads them. Strings are the instance's own (no copies).
type InstanceWindow struct {
	Role        classify.Role
	Client      string
	Identity    string
	Node        string
	Attribution Attribution
	// ByUserAgent: classified by its user agent alone (classify.Result).
	ByUserAgent bool
	// SourceIP is the trusted source address (TrustedSourceIP): the one a
	// ghost-by-address verdict may rest on.
	SourceIP  string
	FirstSeen int64 // Unix ns
	LastSeen  int64
	// Relists, PodRelists and TooLarge are counts in the window. PodRelists
	// are relists of pods of a whole-node shape (node or all): the
	// stale-kubelet signal (SPEC §3.3), which per-object and other selected
	// reads are not.
	Relists    int
	PodRelists int
	TooLarge   int
}

// NodeVerdict is the cluster view's answer about one instance: what only
// the Node and Lease informers know.
type NodeVerdict struct {
	// Synced is false until the view has read Nodes and Leases once; the
	// other fields mean nothing before.
	Synced bool
	// NodeExists says whether the instance's node is a Node.
	NodeExists bool
	// LeaseAge is how long ago the node's kubelet renewed its Lease, when
	// HasLease.
	LeaseAge time.Duration
	HasLease bool
	// GhostReason is why the instance belongs to no live Node; "" when it
	// is not a ghost.
	GhostReason string
}

// Judge is the cluster's half of a verdict. The cluster view implements it
// next to NodeResolver; the ledger asks it once per host-network instance
// per snapshot (and once per listed instance on /debug/clients), so it
// answers from what it already knows, without allocating.
type Judge interface {
	Judge(w *InstanceWindow, now int64) NodeVerdict
}

// Stale-kubelet reasons, the `reason` label of herd_stale_kubelet.
const (
	ReasonTooLargeRV = "too_large_resource_version"
	ReasonRelistLoop = "relist_loop"
)

// Verdict is what herd concludes about one instance: computed by the
// ledger (verdict) for the snapshot's series and for /debug/clients alike.
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

// verdict judges one instance; ok is false when the ledger has no cluster
// view to ask. Ghost-ness is the view's (it knows Nodes, addresses and
// Leases); recency and the stale thresholds are the ledger's. It reads only
// w and immutable configuration, so it runs without any shard's lock, and
// allocates nothing: the snapshot judges every host-network instance.
//
//   - ghost: the view's reason, while the instance called within the window
//     (a ghost that went quiet — stopped, or quarantined and given up — must
//     let its alert resolve), unless it was classified by its user agent
//     alone: then its identity proves nothing about any node, and calling
//     it a ghost would make its identity a quarantine subject on the
//     strength of a header it chose;
//   - stale (SPEC §3.3): a kubelet of an existing Node with at least
//     StaleTooLarge too-large answers, or StalePodRelists whole-node pod
//     relists, in the window.
func (l *Ledger) verdict(w *InstanceWindow, now int64) (ghost, stale string, nv NodeVerdict, ok bool) {
	if l.judge == nil {
		return "", "", nv, false
	}
	nv = l.judge.Judge(w, now)
	if !nv.Synced {
		return "", "", nv, true
	}
	if nv.GhostReason != "" && !w.ByUserAgent && now-w.LastSeen <= int64(l.cfg.Window) {
		ghost = nv.GhostReason
	}
	if w.Role == classify.RoleKubelet && nv.NodeExists {
		switch {
		case w.TooLarge >= l.cfg.StaleTooLarge:
			stale = ReasonTooLargeRV
		case w.PodRelists >= l.cfg.StalePodRelists:
			stale = ReasonRelistLoop
		}
	}
	return ghost, stale, nv, true
}

// debugVerdict is verdict as /debug/clients shows it.
func (l *Ledger) debugVerdict(w *InstanceWindow, now int64) *Verdict {
	ghost, stale, nv, ok := l.verdict(w, now)
	if !ok {
		return nil
	}
	v := &Verdict{Ghost: ghost != "", GhostReason: ghost, Stale: stale != "", StaleReason: stale}
	if nv.Synced && w.Node != "" {
		exists := nv.NodeExists
		v.NodeExists = &exists
		if nv.HasLease {
			s := nv.LeaseAge.Seconds()
			v.LeaseAgeSeconds = &s
		}
	}
	return v
}

// windowSums are an instance's counts in the window, added up over its
// streams.
type windowSums struct{ relists, podRelists, tooLarge int }

// add counts a stream with relists and tooLarge in the window. Pod relists
// of a whole-node shape (node, all, or unknown) are the stale-kubelet
// signal (SPEC §3.3).
func (w *windowSums) add(ls *liveStream, relists, tooLarge int, pods uint16, havePods bool) {
	w.relists += relists
	if havePods && ls.resource == pods && (ls.shape == ShapeNode || ls.shape == ShapeAll || ls.shape == ShapeUnknown) {
		w.podRelists += relists
	}
	w.tooLarge += tooLarge
}

// window fills w with the instance's identity and its counts in the window
// (sums).
func (lv *liveInstance) window(sums windowSums, w *InstanceWindow) {
	in := lv.in
	*w = InstanceWindow{
		Role: in.Role, Client: in.Client, Identity: in.Identity, Node: in.Node, Attribution: in.Attribution,
		ByUserAgent: in.ByUserAgent, SourceIP: lv.trusted.text, FirstSeen: in.FirstSeen, LastSeen: lv.lastSeen,
		Relists: sums.relists, PodRelists: sums.podRelists, TooLarge: sums.tooLarge,
	}
}

// reviewsTokens reports whether lv is a node's kubelet that created
// TokenReviews in the window ending at now (herd_tokenreview_nodes).
func reviewsTokens(lv *liveInstance, now, width int64) bool {
	in := lv.in
	return in.Role == classify.RoleKubelet && in.Node != "" && lv.tokenReviewWin.sum(now, width) > 0
}
