package accounting

import (
	"cmp"
	"runtime"
	"slices"
	"sync"

	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
)

// Snapshot is the ledger at one moment, in label values, with every
// verdict already made: the one thing every collector of a scrape reads,
// whatever order they run in, and what `herd analyze` reports from.
//
// Building it reads the ledger one shard at a time, holding each shard's
// lock for its part of the pass (counters and windows are copied); the
// cluster view is asked about each host-network instance, the caps are
// applied and top-K is chosen after every lock is released.
type Snapshot struct {
	AtNanos int64

	Relists []RelistCount
	Pages   []StreamCount
	// TooLarge counts too-large requests by how herd knows (DetectedBy).
	TooLarge     []TooLargeCount
	Intervals    []IntervalHistogram
	Requests     []RequestCount
	TokenReviews []ClientCount
	// Latency sums, per stream, the apiserver's latency annotations of
	// requests slower than 500 ms.
	Latency []LatencySums

	// RelistingInstances counts, per stream and shape with any relist on
	// record, instances with at least RelistThreshold relists of that shape
	// in the window (0 included, so the series does not vanish when a storm
	// ends).
	RelistingInstances []ShapeCount
	// TopInstances are, for each of the MaxTopKStreams busiest streams
	// (role, client, resource, shape), its TopK instances by relists in the
	// window; and every flagged instance's streams (Ghosts and Stale),
	// whatever their rank (SPEC §3.4).
	TopInstances []InstanceRelists
	// TokenReviewNodes is how many nodes' kubelets created TokenReviews in the window.
	TokenReviewNodes int

	// The stampede forecast (forecast.go): live instances by stream,
	// latest relist and priority level; their FlowSchema subjects; the
	// instances in a relist wave.
	Stampede         []StampedeCount
	StampedeSubjects []SubjectCount
	Wave             []WaveCount

	Instances int
	Evicted   uint64
	// RevisionChecksDropped counts requests with a resourceVersion that
	// were not checked against the cluster's revision because
	// MaxPendingRevisionChecks were waiting.
	RevisionChecksDropped uint64

	// Judged is set when the ledger has a cluster view (Judge): the verdict
	// fields below are filled only then.
	Judged bool
	// GhostCounts has one entry per (role, client) of a host-network
	// instance in the table: how many of them are ghosts, 0 included.
	GhostCounts []ClientCount
	// Ghosts are the ghost instances, most recently active first, at most
	// MaxGhostSeries distinct label sets.
	Ghosts []GhostInstance
	// Stale are the stale kubelets, worst first, at most MaxStaleSeries
	// distinct (node, reason); StaleTotal counts them all.
	Stale      []StaleKubelet
	StaleTotal int
}

type ClientLabels struct{ Role, Client string }

type StreamLabels struct {
	ClientLabels
	Resource string
}

type RelistCount struct {
	StreamLabels
	Shape       string
	Consistency string
	Value       uint64
}

// ShapeLabels are a stream's labels and the shape of its relists.
type ShapeLabels struct {
	StreamLabels
	Shape string
}

type ShapeCount struct {
	ShapeLabels
	Value uint64
}

type StreamCount struct {
	StreamLabels
	Value uint64
}

type TooLargeCount struct {
	StreamLabels
	DetectedBy string
	Value      uint64
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

// LatencySums are one stream's annotated (slow) requests and the seconds
// the apiserver spent on them, by phase (audit.LatencyPhase).
type LatencySums struct {
	StreamLabels
	Requests uint64
	Seconds  [audit.NumLatencyPhases]float64
}

type IntervalHistogram struct {
	ShapeLabels
	Count   uint64
	Sum     float64
	Buckets map[float64]uint64
}

type InstanceRelists struct {
	ShapeLabels
	Node string
	// Identity is the authenticated user (system:node:<node>, a service
	// account): the subject the responder's isolate action puts in a
	// FlowSchema, on the evidence of this series. One per node for
	// kubelets, so it adds no series.
	Identity string
	// ClassifiedBy is "identity", or "user_agent" when only the client's
	// User-Agent put it in this role and client: such an identity is a
	// subject only on its own relists.
	ClassifiedBy string
	Relists      int
}

// GhostInstance is one herd_ghost_instance series.
type GhostInstance struct {
	ClientLabels
	Identity, Node, SourceIP, Reason string
}

// StaleKubelet is one herd_stale_kubelet series.
type StaleKubelet struct{ Node, Reason string }

func (l *Ledger) clientLabels(k clientKey) ClientLabels {
	return ClientLabels{Role: k.role.String(), Client: l.clients.name(k.client)}
}

func (l *Ledger) streamLabels(k streamKey) StreamLabels {
	return StreamLabels{ClientLabels: l.clientLabels(k.clientKey), Resource: l.resources.name(k.resource)}
}

func (l *Ledger) shapeLabels(k shapeKey) ShapeLabels {
	return ShapeLabels{StreamLabels: l.streamLabels(k.streamKey), Shape: k.shape.String()}
}

// Snapshot reads the ledger at the current time.
func (l *Ledger) Snapshot() Snapshot {
	return l.SnapshotAt(l.clock())
}

// topKey is one instance's stream: a candidate herd_instance_relists series.
type topKey struct {
	shapeKey
	node, identity string
	byUserAgent    bool
}

type topCount struct {
	key     topKey
	relists int
}

// flagKey names an instance flagged by a verdict.
type flagKey struct{ identity, node string }

// scratch holds a snapshot's per-instance working sets between snapshots,
// so that a scrape at 15,000 instances reuses them rather than allocating
// them again; snapshots take turns on it.
type scratch struct {
	mu         sync.Mutex
	tops       []topCount
	judged     []InstanceWindow
	copy       shardCopy
	windowSums []windowSums
	forecast   forecastSums
}

// sums is a zeroed slice of n windowSums, reused between shards and reads.
func (s *scratch) sums(n int) []windowSums {
	if cap(s.windowSums) < n {
		s.windowSums = make([]windowSums, n)
	}
	s.windowSums = s.windowSums[:n]
	clear(s.windowSums)
	return s.windowSums
}

// SnapshotAt reads the ledger with windows ending at now (Unix ns); `herd
// analyze` passes the last event's time.
func (l *Ledger) SnapshotAt(now int64) Snapshot {
	l.scratch.mu.Lock()
	defer l.scratch.mu.Unlock()
	s := l.read(now)
	flagged := map[flagKey]bool{}
	if l.judge != nil {
		s.Judged = true
		l.judgeAll(&s, l.scratch.judged, now, flagged)
	}
	s.TopInstances = l.topK(l.scratch.tops, flagged)
	// Drop the references to instances' strings the buffers hold.
	clear(l.scratch.tops)
	clear(l.scratch.judged)
	return s
}

// read copies what the snapshot needs, one shard at a time: under the
// shard's lock, its packed instance and stream state (copyLive) and its
// counters (summed over the shards); then, without the lock, each instance
// stream's window, and the windows of the host-network instances the
// cluster view is to judge. Labels are named after the shards are released.
// Each shard is read at its own moment, so a counter may include an event
// that a shard read earlier does not: the sums are still exact and never go
// back, as counters must.
func (l *Ledger) read(now int64) (s Snapshot) {
	s = Snapshot{AtNanos: now, Evicted: l.evicted.Load(), RevisionChecksDropped: l.revDropped.Load()}
	var (
		relists      = map[relistKey]uint64{}
		pages        = map[streamKey]uint64{}
		tooLarge     = map[tooLargeKey]uint64{}
		intervals    = map[shapeKey]*histogram{}
		requests     = map[requestKey]uint64{}
		tokenReviews = map[clientKey]uint64{}
		latency      = map[streamKey]*latencySums{}
		relisting    = map[shapeKey]uint64{}
	)
	tops, judged := l.scratch.tops[:0], l.scratch.judged[:0]
	tokenReviewNodes := map[string]bool{}
	pods, havePods := l.resources.known("pods")
	liveFrom, waveFrom := l.liveSince(now)
	c := &l.scratch.copy
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		l.settleRevisions(sh)
		sh.copyLive(c)
		for p, v := range sh.relists {
			k := unpackRelist(p)
			relists[k] += v
			relisting[k.shapeKey] += 0
		}
		for p, v := range sh.pages {
			pages[unpackStream(p)] += v
		}
		for p, v := range sh.tooLarge {
			tooLarge[tooLargeKey{unpackStream(p), DetectedByStatus}] += v
		}
		for p, v := range sh.tooLargeRev {
			tooLarge[tooLargeKey{unpackStream(p), DetectedByRevision}] += v
		}
		for p, h := range sh.intervals {
			k := unpackShape(p)
			m := intervals[k]
			if m == nil {
				m = &histogram{}
				intervals[k] = m
			}
			m.merge(h)
		}
		for p, v := range sh.requests {
			requests[unpackRequest(p)] += v
		}
		for k, v := range sh.tokenReviews {
			tokenReviews[k] += v
		}
		for k, v := range sh.latency {
			m := latency[k]
			if m == nil {
				m = &latencySums{}
				latency[k] = m
			}
			m.requests += v.requests
			for p, ns := range v.nanos {
				m.nanos[p] += ns
			}
		}
		sh.mu.Unlock()

		// The shard is free again; the rest works on the copy (an
		// instance's identity never changes, so it is read through its
		// pointer).
		sums := l.scratch.sums(len(c.live))
		for j := range c.streams {
			ls := &c.streams[j]
			n := ls.win.sum(now, l.width)
			sums[ls.owner].add(ls, n, ls.tooLargeWin.sum(now, l.width), pods, havePods)
			if n == 0 {
				continue
			}
			in := c.live[ls.owner].in
			sk := shapeKey{streamKey{clientKey: in.ck, resource: ls.resource}, ls.shape}
			if n >= l.cfg.RelistThreshold {
				relisting[sk]++
			}
			// One per instance stream: an instance is (role, client,
			// identity, node), so no two share a key.
			tops = append(tops, topCount{topKey{shapeKey: sk, node: in.Node, identity: in.Identity, byUserAgent: in.ByUserAgent}, n})
		}
		for j := range c.live {
			lv := &c.live[j]
			if reviewsTokens(lv, now, l.width) {
				tokenReviewNodes[lv.in.Node] = true
			}
			if l.judge != nil && classify.HostAgent(lv.in.Role) {
				judged = append(judged, InstanceWindow{})
				lv.window(sums[j], &judged[len(judged)-1])
			}
		}
		l.scratch.forecast.add(c, l.leveler, liveFrom, waveFrom)
		c.release()
		// A read is the least urgent work in herd: let a batch that became
		// runnable meanwhile have this core before the next shard.
		runtime.Gosched()
	}
	for k, v := range relists {
		s.Relists = append(s.Relists, RelistCount{StreamLabels: l.streamLabels(k.streamKey), Shape: k.shape.String(), Consistency: k.consistency.String(), Value: v})
	}
	for k, v := range pages {
		s.Pages = append(s.Pages, StreamCount{l.streamLabels(k), v})
	}
	for k, v := range tooLarge {
		s.TooLarge = append(s.TooLarge, TooLargeCount{l.streamLabels(k.streamKey), k.by.String(), v})
	}
	for k, h := range intervals {
		s.Intervals = append(s.Intervals, IntervalHistogram{ShapeLabels: l.shapeLabels(k), Count: h.count, Sum: h.sum(), Buckets: h.cumulative()})
	}
	for k, v := range requests {
		s.Requests = append(s.Requests, RequestCount{ClientLabels: l.clientLabels(k.clientKey), Verb: l.verbs.name(k.verb), Code: k.code, Value: v})
	}
	for k, v := range tokenReviews {
		s.TokenReviews = append(s.TokenReviews, ClientCount{l.clientLabels(k), v})
	}
	for k, v := range latency {
		ls := LatencySums{StreamLabels: l.streamLabels(k), Requests: v.requests}
		for i, ns := range v.nanos {
			ls.Seconds[i] = float64(ns) / 1e9
		}
		s.Latency = append(s.Latency, ls)
	}
	for k, v := range relisting {
		s.RelistingInstances = append(s.RelistingInstances, ShapeCount{l.shapeLabels(k), v})
	}
	l.scratch.tops, l.scratch.judged = tops, judged
	s.TokenReviewNodes = len(tokenReviewNodes)
	l.forecast(&l.scratch.forecast, l.leveler, &s)
	// The table's size at one moment (the shards were read one after
	// another); a reservation that failed for a full table may show for an
	// instant.
	s.Instances = int(min(l.count.Load(), int64(l.cfg.MaxInstances)))
	return s
}

// judgeAll makes every verdict of the snapshot: ghost counts, the capped
// ghost and stale series, and the instances they flag.
func (l *Ledger) judgeAll(s *Snapshot, judged []InstanceWindow, now int64, flagged map[flagKey]bool) {
	type ghost struct {
		GhostInstance
		lastSeen int64
	}
	type stale struct {
		StaleKubelet
		identity string
		severity int
	}
	counts := map[ClientLabels]uint64{}
	var ghosts []ghost
	var stales []stale
	for i := range judged {
		w := &judged[i]
		k := ClientLabels{Role: w.Role.String(), Client: w.Client}
		counts[k] += 0
		ghostReason, staleReason, _, _ := l.verdict(w, now)
		if ghostReason != "" {
			counts[k]++
			ghosts = append(ghosts, ghost{GhostInstance{k, w.Identity, w.Node, w.SourceIP, ghostReason}, w.LastSeen})
		}
		if staleReason != "" {
			stales = append(stales, stale{StaleKubelet{w.Node, staleReason}, w.Identity, w.TooLarge*1000 + w.PodRelists})
		}
	}
	for k, n := range counts {
		s.GhostCounts = append(s.GhostCounts, ClientCount{k, n})
	}

	slices.SortFunc(ghosts, func(a, b ghost) int {
		return cmp.Or(cmp.Compare(b.lastSeen, a.lastSeen), cmp.Compare(a.Identity, b.Identity), cmp.Compare(a.Node, b.Node),
			cmp.Compare(a.SourceIP, b.SourceIP), cmp.Compare(a.Client, b.Client))
	})
	shown := map[GhostInstance]bool{}
	for _, g := range ghosts {
		if len(shown) >= l.cfg.MaxGhostSeries || shown[g.GhostInstance] {
			continue
		}
		shown[g.GhostInstance] = true
		flagged[flagKey{g.Identity, g.Node}] = true
		s.Ghosts = append(s.Ghosts, g.GhostInstance)
	}

	slices.SortFunc(stales, func(a, b stale) int {
		return cmp.Or(cmp.Compare(b.severity, a.severity), cmp.Compare(a.Node, b.Node), cmp.Compare(a.identity, b.identity))
	})
	staleShown := map[StaleKubelet]bool{}
	for _, st := range stales {
		if staleShown[st.StaleKubelet] || len(staleShown) >= l.cfg.MaxStaleSeries {
			continue
		}
		staleShown[st.StaleKubelet] = true
		flagged[flagKey{st.identity, st.Node}] = true
		s.Stale = append(s.Stale, st.StaleKubelet)
	}
	s.StaleTotal = len(stales)
}

// topK keeps, for each of the MaxTopKStreams streams (role, client,
// resource, shape) with the most relists in the window, its TopK instances;
// then every flagged instance's streams. A shape is a stream of its own, so
// that kubelets' per-object reflectors never crowd out whole-resource
// relists of the same resource. Per stream, so that one noisy instance — or
// many cheap refused requests, which are not relists at all — cannot push
// another client's storm out: the identities storming a stream are in its
// top K, the evidence the responder's isolate action needs for each
// subject. Ties are broken by label values, so the same state always gives
// the same series. Candidates are sorted by their ids; only streams and the
// kept instances get label values.
func (l *Ledger) topK(tops []topCount, flagged map[flagKey]bool) []InstanceRelists {
	slices.SortFunc(tops, func(a, b topCount) int {
		x, y := a.key, b.key
		return cmp.Or(cmp.Compare(x.role, y.role), cmp.Compare(x.client, y.client), cmp.Compare(x.resource, y.resource),
			cmp.Compare(x.shape, y.shape), cmp.Compare(b.relists, a.relists), cmp.Compare(x.node, y.node), cmp.Compare(x.identity, y.identity))
	})
	type stream struct {
		labels   ShapeLabels
		from, to int // tops[from:to], busiest first
		relists  int
	}
	var streams []stream
	for i := 0; i < len(tops); {
		st := stream{labels: l.shapeLabels(tops[i].key.shapeKey), from: i}
		for ; i < len(tops) && tops[i].key.shapeKey == tops[st.from].key.shapeKey; i++ {
			st.relists += tops[i].relists
		}
		st.to = i
		streams = append(streams, st)
	}
	slices.SortFunc(streams, func(a, b stream) int {
		return cmp.Or(cmp.Compare(b.relists, a.relists), compareStream(a.labels, b.labels))
	})
	var out []InstanceRelists
	for rank, st := range streams {
		for i, t := range tops[st.from:st.to] {
			if rank < l.cfg.MaxTopKStreams && i < l.cfg.TopK || flagged[flagKey{t.key.identity, t.key.node}] {
				out = append(out, InstanceRelists{ShapeLabels: st.labels, Node: t.key.node, Identity: t.key.identity,
					ClassifiedBy: classifiedBy(t.key.byUserAgent), Relists: t.relists})
			}
		}
	}
	return out
}

func compareStream(a, b ShapeLabels) int {
	return cmp.Or(cmp.Compare(a.Role, b.Role), cmp.Compare(a.Client, b.Client), cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Shape, b.Shape))
}
