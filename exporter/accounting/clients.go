package accounting

import (
	"cmp"
	"runtime"
	"slices"
	"time"
)

// ClientView is one instance as /debug/clients and `herd analyze` show it.
type ClientView struct {
	Role        string `json:"role"`
	Client      string `json:"client"`
	Identity    string `json:"identity"`
	Node        string `json:"node"`
	Attribution string `json:"attribution"`
	// ClassifiedBy is "identity", or "user_agent" when only the User-Agent
	// matched a rule.
	ClassifiedBy string `json:"classifiedBy"`
	// SourceIP is the last sourceIPs[0]: X-Forwarded-For's first hop when
	// the client sent one, shown, never trusted. TrustedSourceIP is the
	// address attribution and ghost verdicts use.
	SourceIP        string       `json:"sourceIP,omitempty"`
	TrustedSourceIP string       `json:"trustedSourceIP,omitempty"`
	SourceIPChanges uint64       `json:"sourceIPChanges,omitempty"`
	UserAgent       string       `json:"userAgent,omitempty"`
	FirstSeen       time.Time    `json:"firstSeen"`
	LastSeen        time.Time    `json:"lastSeen"`
	Requests        uint64       `json:"requests"`
	Errors          uint64       `json:"errors"`
	LastErrorCode   int32        `json:"lastErrorCode,omitempty"`
	TokenReviews    uint64       `json:"tokenReviews,omitempty"`
	WindowRelists   int          `json:"windowRelists"`
	WindowTooLarge  int          `json:"windowTooLargeResourceVersion"`
	Resources       []StreamView `json:"resources"`
	// Cluster is the verdict on the instance, made as the snapshot makes
	// it; nil without a cluster view (--no-kube, herd analyze).
	Cluster *Verdict `json:"cluster,omitempty"`

	window InstanceWindow
}

// StreamView is an instance's traffic on one resource, in one shape.
type StreamView struct {
	Resource string `json:"resource"`
	// Shape is what its relists select: all, node, selected or object.
	Shape         string            `json:"shape"`
	Relists       uint64            `json:"relists"`
	ByConsistency map[string]uint64 `json:"byConsistency,omitempty"`
	Pages         uint64            `json:"pages,omitempty"`
	TooLarge      uint64            `json:"tooLargeResourceVersion,omitempty"`
	LastRelist    *time.Time        `json:"lastRelist,omitempty"`
	// Mode is how it last relisted (list, watchlist); LastWatch its
	// newest plain watch: what makes it live for the forecast.
	Mode           string     `json:"mode,omitempty"`
	LastWatch      *time.Time `json:"lastWatch,omitempty"`
	WindowRelists  int        `json:"windowRelists"`
	WindowTooLarge int        `json:"windowTooLargeResourceVersion,omitempty"`
}

// ClientFilter selects instances; empty fields match everything.
type ClientFilter struct {
	Role, Client, Node, Identity string
	// Limit caps the result (most window relists first); 0 means no cap.
	Limit int
}

func (f ClientFilter) match(in *Instance) bool {
	return (f.Role == "" || f.Role == in.Role.String()) && (f.Client == "" || f.Client == in.Client) &&
		(f.Node == "" || f.Node == in.Node) && (f.Identity == "" || f.Identity == in.Identity)
}

// Clients lists instances with their counters and verdicts, busiest in the
// window first.
func (l *Ledger) Clients(f ClientFilter) []ClientView {
	return l.ClientsAt(l.clock(), f)
}

// clientRank is an instance as ClientsAt orders them: by window relists,
// then window too-large answers, then identity and node.
type clientRank struct {
	in                *Instance
	shard             int
	relists, tooLarge int
}

// before reports whether a is listed before b.
func (a *clientRank) before(b *clientRank) bool {
	if a.relists != b.relists {
		return a.relists > b.relists
	}
	if a.tooLarge != b.tooLarge {
		return a.tooLarge > b.tooLarge
	}
	// Identity and node are an instance's own, set when it was made: read
	// without its shard's lock. Compared as one string, identity+node.
	return lessConcat(a.in.Identity, a.in.Node, b.in.Identity, b.in.Node)
}

// lessConcat reports whether a1+a2 < b1+b2, without building either.
func lessConcat(a1, a2, b1, b2 string) bool {
	for i := 0; ; i++ {
		ac, aok := byteAt(a1, a2, i)
		bc, bok := byteAt(b1, b2, i)
		switch {
		case !aok || !bok:
			return !aok && bok
		case ac != bc:
			return ac < bc
		}
	}
}

func byteAt(s1, s2 string, i int) (byte, bool) {
	if i < len(s1) {
		return s1[i], true
	}
	if i -= len(s1); i < len(s2) {
		return s2[i], true
	}
	return 0, false
}

// ClientsAt is Clients with windows ending at now (Unix ns).
//
// The limit bounds the work, not only the output: a first pass copies each
// shard's packed state (as a snapshot does) and ranks the matching
// instances by their window sums on the copy, keeping the best Limit in a
// heap; only those are then read in full (streams, addresses, verdicts) and
// turned into views, each under its shard's lock for that one instance. At
// 15,000 instances, ?limit=10 builds ten views, not 15,000. An instance
// evicted between the two passes is left out.
func (l *Ledger) ClientsAt(now int64, f ClientFilter) []ClientView {
	var (
		kept  rankHeap
		ranks []clientRank
	)
	c := copies.Get().(*shardCopy)
	defer copies.Put(c)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.settleRevisions(s)
		s.copyLive(c)
		s.mu.Unlock()
		ranks = append(ranks[:0], make([]clientRank, len(c.live))...)
		for j := range c.streams {
			ls := &c.streams[j]
			ranks[ls.owner].relists += ls.win.sum(now, l.width)
			ranks[ls.owner].tooLarge += ls.tooLargeWin.sum(now, l.width)
		}
		for j := range c.live {
			if in := c.live[j].in; f.match(in) {
				r := ranks[j]
				r.in, r.shard = in, i
				kept.offer(r, f.Limit)
			}
		}
		c.release()
		runtime.Gosched() // as in read: batches first
	}
	ranked := kept.sorted()
	out := make([]ClientView, 0, len(ranked))
	pods, havePods := l.resources.known("pods")
	for _, r := range ranked {
		s := &l.shards[r.shard]
		s.mu.Lock()
		if r.in.live >= 0 {
			out = append(out, ClientView{})
			l.view(s, r.in, now, pods, havePods, &out[len(out)-1])
		}
		s.mu.Unlock()
	}
	for i := range out {
		out[i].Cluster = l.debugVerdict(&out[i].window, now)
	}
	return out
}

// view fills v with in's counters and streams in the window ending at now;
// call with s, in's shard, locked.
func (l *Ledger) view(s *shard, in *Instance, now int64, pods uint16, havePods bool, v *ClientView) {
	lv := &s.live[in.live]
	*v = ClientView{
		Role: in.Role.String(), Client: in.Client, Identity: in.Identity, Node: in.Node,
		Attribution: in.Attribution.String(), ClassifiedBy: classifiedBy(in.ByUserAgent),
		SourceIP: in.source.String(), TrustedSourceIP: lv.trusted.String(), SourceIPChanges: in.SourceIPChanges,
		UserAgent: in.UserAgent, FirstSeen: time.Unix(0, in.FirstSeen).UTC(), LastSeen: time.Unix(0, lv.lastSeen).UTC(),
		Requests: in.Requests, Errors: in.Errors, LastErrorCode: in.LastErrorCode, TokenReviews: in.TokenReviews,
		Resources: make([]StreamView, 0, len(in.streams)),
	}
	var sums windowSums
	for _, st := range in.streams {
		ls := &s.streams[st.live]
		sv := StreamView{
			Resource: l.resources.name(st.resource), Shape: st.shape.String(), Relists: st.Relists, Pages: st.Pages, TooLarge: st.TooLarge,
			WindowRelists: ls.win.sum(now, l.width), WindowTooLarge: ls.tooLargeWin.sum(now, l.width),
		}
		sums.add(ls, sv.WindowRelists, sv.WindowTooLarge, pods, havePods)
		for c, n := range st.ByConsistency {
			if n > 0 {
				if sv.ByConsistency == nil {
					sv.ByConsistency = map[string]uint64{}
				}
				sv.ByConsistency[Consistency(c).String()] = n
			}
		}
		if ls.lastRelistNanos > 0 {
			t := time.Unix(0, ls.lastRelistNanos).UTC()
			sv.LastRelist = &t
		}
		if ls.lastMode != ModeUnknown {
			sv.Mode = ls.lastMode.String()
		}
		if ls.lastWatchNanos > 0 {
			t := time.Unix(0, ls.lastWatchNanos).UTC()
			sv.LastWatch = &t
		}
		v.WindowRelists += sv.WindowRelists
		v.WindowTooLarge += sv.WindowTooLarge
		v.Resources = append(v.Resources, sv)
	}
	lv.window(sums, &v.window)
	slices.SortFunc(v.Resources, func(a, b StreamView) int {
		return cmp.Or(cmp.Compare(a.Resource, b.Resource), cmp.Compare(a.Shape, b.Shape))
	})
}

// rankHeap keeps the best instances seen so far: all of them without a
// limit, else at most limit, in a heap whose root is the worst kept.
type rankHeap []clientRank

func (h *rankHeap) offer(r clientRank, limit int) {
	switch {
	case limit <= 0:
		*h = append(*h, r)
	case len(*h) < limit:
		*h = append(*h, r)
		h.up(len(*h) - 1)
	case r.before(&(*h)[0]):
		(*h)[0] = r
		h.down(0)
	}
}

// worse reports whether the entry at i ranks after the one at j (the heap
// keeps the worst at its root).
func (h rankHeap) worse(i, j int) bool { return h[j].before(&h[i]) }

func (h rankHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.worse(i, p) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (h rankHeap) down(i int) {
	for {
		w, l, r := i, 2*i+1, 2*i+2
		if l < len(h) && h.worse(l, w) {
			w = l
		}
		if r < len(h) && h.worse(r, w) {
			w = r
		}
		if w == i {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}

// sorted is the kept instances, best first.
func (h rankHeap) sorted() []clientRank {
	slices.SortFunc(h, func(a, b clientRank) int {
		switch {
		case a.before(&b):
			return -1
		case b.before(&a):
			return 1
		}
		return 0
	})
	return h
}

// TokenReviewNodes is how many nodes' kubelets created TokenReviews in the
// window ending now, as Snapshot counts them; it copies one shard at a time.
func (l *Ledger) TokenReviewNodes() int {
	now := l.clock()
	nodes := map[string]bool{}
	c := copies.Get().(*shardCopy)
	defer copies.Put(c)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		c.live = append(c.live[:0], s.live...)
		s.mu.Unlock()
		for j := range c.live {
			if reviewsTokens(&c.live[j], now, l.width) {
				nodes[c.live[j].in.Node] = true
			}
		}
		c.release()
	}
	return len(nodes)
}

// classifiedBy is the classified_by label value and /debug/clients field.
func classifiedBy(byUserAgent bool) string {
	if byUserAgent {
		return "user_agent"
	}
	return "identity"
}
