package accounting

import (
	"sort"

	"github.com/herd-k8s/herd/exporter/classify"
)

// Snapshot is the ledger at one moment, in label values, for collectors,
// debug pages and `herd analyze`. Building it holds the ledger's lock for one
// pass over the instance table.
type Snapshot struct {
	AtNanos int64

	Relists      []RelistCount
	Pages        []StreamCount
	TooLarge     []StreamCount
	Intervals    []IntervalHistogram
	Requests     []RequestCount
	TokenReviews []ClientCount

	// RelistingInstances counts, per stream with any relist on record,
	// instances with at least RelistThreshold relists in the window (0 included,
	// so the series does not vanish when a storm ends).
	RelistingInstances []StreamCount
	// TopInstances are the TopK instance streams by relists in the window,
	// summed by (role, client, node, resource).
	TopInstances []InstanceRelists
	// TokenReviewNodes is how many nodes' kubelets created TokenReviews in the window.
	TokenReviewNodes int

	Instances int
	Evicted   uint64
}

type ClientLabels struct{ Role, Client string }

type StreamLabels struct {
	ClientLabels
	Resource string
}

type RelistCount struct {
	StreamLabels
	Consistency string
	Value       uint64
}

type StreamCount struct {
	StreamLabels
	Value uint64
}

type RequestCount struct {
	ClientLabels
	Verb  string
	Code  int32
	Value uint64
}

type ClientCount struct {
	ClientLabels
	Value uint64
}

type IntervalHistogram struct {
	StreamLabels
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

type InstanceRelists struct {
	StreamLabels
	Node string
	// Identity is the authenticated user (system:node:<node>, a service
	// account): the subject the responder's isolate action puts in a
	// FlowSchema. One per node for kubelets, so it adds no series.
	Identity string
	Relists  int
}

func (l *Ledger) clientLabels(k clientKey) ClientLabels {
	return ClientLabels{Role: k.role.String(), Client: l.clients.name(k.client)}
}

func (l *Ledger) streamLabels(k streamKey) StreamLabels {
	return StreamLabels{ClientLabels: l.clientLabels(k.clientKey), Resource: l.resources.name(k.resource)}
}

// Snapshot reads the ledger at the current time.
func (l *Ledger) Snapshot() Snapshot {
	return l.SnapshotAt(l.now().UnixNano())
}

// SnapshotAt reads the ledger with windows ending at now (Unix ns); `herd
// analyze` passes the last event's time.
func (l *Ledger) SnapshotAt(now int64) Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Snapshot{AtNanos: now, Instances: len(l.instances), Evicted: l.evicted}
	for k, v := range l.relists {
		s.Relists = append(s.Relists, RelistCount{StreamLabels: l.streamLabels(k.streamKey), Consistency: k.consistency.String(), Value: v})
	}
	for k, v := range l.pages {
		s.Pages = append(s.Pages, StreamCount{l.streamLabels(k), v})
	}
	for k, v := range l.tooLarge {
		s.TooLarge = append(s.TooLarge, StreamCount{l.streamLabels(k), v})
	}
	for k, h := range l.intervals {
		s.Intervals = append(s.Intervals, IntervalHistogram{StreamLabels: l.streamLabels(k), Count: h.count, Sum: h.sum, Buckets: h.cumulative()})
	}
	for k, v := range l.requests {
		s.Requests = append(s.Requests, RequestCount{ClientLabels: l.clientLabels(k.clientKey), Verb: l.verbs.name(k.verb), Code: k.code, Value: v})
	}
	for k, v := range l.tokenReviews {
		s.TokenReviews = append(s.TokenReviews, ClientCount{l.clientLabels(k), v})
	}

	relisting := map[streamKey]uint64{}
	for k := range l.relists {
		relisting[k.streamKey] += 0
	}
	type top struct {
		key     topKey
		relists int
	}
	perNode := map[topKey]int{}
	flagged := map[topKey]bool{}
	tokenReviewNodes := map[string]bool{}
	for _, in := range l.instances {
		isFlagged := l.flagger != nil && l.flagger.Flagged(in.Identity, in.Node)
		for _, st := range in.streams {
			n := st.win.sum(now, l.width)
			if n == 0 {
				continue
			}
			sk := streamKey{clientKey: in.ck, resource: st.resource}
			if n >= l.cfg.RelistThreshold {
				relisting[sk]++
			}
			tk := topKey{streamKey: sk, node: in.Node, identity: in.Identity}
			perNode[tk] += n
			if isFlagged {
				flagged[tk] = true
			}
		}
		if in.Role == classify.RoleKubelet && in.Node != "" && in.tokenReviewWin.sum(now, l.width) > 0 {
			tokenReviewNodes[in.Node] = true
		}
	}
	for k, v := range relisting {
		s.RelistingInstances = append(s.RelistingInstances, StreamCount{l.streamLabels(k), v})
	}
	tops := make([]top, 0, len(perNode))
	for k, v := range perNode {
		tops = append(tops, top{k, v})
	}
	sort.Slice(tops, func(i, j int) bool {
		if tops[i].relists != tops[j].relists {
			return tops[i].relists > tops[j].relists
		}
		if tops[i].key.node != tops[j].key.node {
			return tops[i].key.node < tops[j].key.node
		}
		return tops[i].key.identity < tops[j].key.identity
	})
	if len(tops) > l.cfg.TopK {
		// Keep the top K, then every flagged stream below them.
		kept := tops[:l.cfg.TopK]
		for _, t := range tops[l.cfg.TopK:] {
			if flagged[t.key] {
				kept = append(kept, t)
			}
		}
		tops = kept
	}
	for _, t := range tops {
		s.TopInstances = append(s.TopInstances, InstanceRelists{StreamLabels: l.streamLabels(t.key.streamKey), Node: t.key.node, Identity: t.key.identity, Relists: t.relists})
	}
	s.TokenReviewNodes = len(tokenReviewNodes)
	return s
}

type topKey struct {
	streamKey
	node, identity string
}
