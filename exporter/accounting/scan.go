package accounting

import "github.com/herd-k8s/herd/exporter/classify"

// InstanceWindow is an instance's identity and its windowed counts, as the
// cluster view needs them to call it a ghost or a stale kubelet. Strings are
// the instance's own (no copies).
type InstanceWindow struct {
	Role        classify.Role
	Client      string
	Identity    string
	Node        string
	Attribution Attribution
	SourceIP    string
	FirstSeen   int64 // Unix ns
	LastSeen    int64
	// Relists, PodRelists and TooLarge are counts in the window.
	Relists    int
	PodRelists int
	TooLarge   int
}

// Flagger marks instances that must get per-node series whatever their rank
// (SPEC §3.4: "top-K instances and flagged instances"). It is asked for every
// instance on every scrape, so it answers from what it already knows.
type Flagger interface {
	Flagged(identity, node string) bool
}

// SetFlagger installs f; nil removes it. Call before serving scrapes.
func (l *Ledger) SetFlagger(f Flagger) {
	l.mu.Lock()
	l.flagger = f
	l.mu.Unlock()
}

// Scan calls fn for every instance with its window ending at now (Unix ns),
// under the ledger's lock: fn must be quick and must not call the ledger.
func (l *Ledger) Scan(now int64, fn func(*InstanceWindow)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pods, havePods := l.resources.ids["pods"]
	var w InstanceWindow
	for _, in := range l.instances {
		l.window(in, now, pods, havePods, &w)
		fn(&w)
	}
}

func (l *Ledger) window(in *Instance, now int64, pods uint16, havePods bool, w *InstanceWindow) {
	*w = InstanceWindow{
		Role: in.Role, Client: in.Client, Identity: in.Identity, Node: in.Node, Attribution: in.Attribution,
		SourceIP: in.sourceIP(), FirstSeen: in.FirstSeen, LastSeen: in.LastSeen,
	}
	for _, s := range in.streams {
		n := s.win.sum(now, l.width)
		w.Relists += n
		if havePods && s.resource == pods {
			w.PodRelists += n
		}
		w.TooLarge += s.tooLargeWin.sum(now, l.width)
	}
}
