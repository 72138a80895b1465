package accounting

import (
	"cmp"
	"slices"
	"strings"

	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/internal/nodeclient"
)

// The stampede forecast (issue 12). The harm of a synchronized relist is
// (instances of one client that would relist a resource) × (what one of
// their relists costs: its shape, consistency and mode, and the objects and
// bytes it returns), bounded by the concurrency the client's APF priority
// level allows. The ledger knows the first factor and the shape of the
// second: which instances are live on a resource — they hold a watch on it
// or relisted it within accounting.liveWindow, longer than the 5–10 minute
// watch timeout, so an informer's re-watches keep it live — and how each
// last relisted it. The mixin adds the apiserver's object counts and sizes
// and its APF seats (rules/rules/stampede.libsonnet).
//
// Per instance stream this costs four fields set in Account (lastWatch,
// lastStart, lastMode, lastCons), kept in the shard's packed stream state
// (liveStream) that a read copies anyway; a snapshot aggregates each
// shard's copy after releasing its lock, asks the Leveler with no shard
// locked, and names and caps the series once every shard was read.

// Mode is how an instance last relisted a resource: a LIST, or a WatchList
// (watch with sendInitialEvents=true, client-go ≥ 1.35's default), whose
// initial state the apiserver streams from its watch cache without
// materialising the whole response.
type Mode uint8

const (
	// ModeUnknown: no relist on record — the instance is live by its
	// watches alone (it relisted before herd started). The forecast costs
	// it as a LIST: the expensive guess.
	ModeUnknown Mode = iota
	ModeList
	ModeWatchList
	numModes
)

var modeNames = [numModes]string{"unknown", "list", "watchlist"}

func (m Mode) String() string { return modeNames[m] }

// Leveler names the APF priority level that serves an identity's
// cluster-wide LIST of a resource (herd's resource label: pods,
// endpointslices.discovery.k8s.io). The exporter's APF view implements it
// from the FlowSchemas in force (exporter/apf). A snapshot asks Class for
// every live instance stream, and PriorityLevel once per distinct class
// and resource: Class must be cheap and must not allocate.
type Leveler interface {
	// Class is a key under which identities are served alike (all the
	// kubelets of a fleet share one).
	Class(identity string) string
	// PriorityLevel is the level serving class's LIST of resource, "" when
	// unknown (the view has not synced).
	PriorityLevel(class, resource string) string
}

// SetLeveler gives the ledger the APF view that labels the forecast with
// priority levels; without one (`--no-kube`, `herd analyze` without
// FlowSchemas) priority_level is "". Call it before use.
func (l *Ledger) SetLeveler(lv Leveler) { l.leveler = lv }

// StampedeCount is one herd_stampede_instances series: live instances of a
// stream (role, client, resource, shape) by the consistency and mode of
// their latest relist and the priority level that serves their LISTs.
type StampedeCount struct {
	ShapeLabels
	Consistency, Mode, PriorityLevel string
	Value                            uint64
}

// SubjectCount is one herd_stampede_subjects series: the live instances of
// (role, client, resource) that are one FlowSchema subject.
type SubjectCount struct {
	StreamLabels
	Subject string
	Value   uint64
}

// WaveCount is one herd_relist_wave_instances series: instances whose
// relist of the resource, in this shape and mode, started or completed
// within accounting.waveWindow.
type WaveCount struct {
	ShapeLabels
	Mode  string
	Value uint64
}

// liveSince are the bounds of the live and wave windows ending at now.
func (l *Ledger) liveSince(now int64) (liveFrom, waveFrom int64) {
	return now - int64(l.cfg.LiveWindow), now - int64(l.cfg.WaveWindow)
}

// maySubject reports whether an instance's identity may be a FlowSchema
// subject: classified by who it is, not by user agent, and authenticated.
func maySubject(cls classify.Result, identity []byte) bool {
	return !cls.ByUserAgent && cls.Client != classify.Unauthenticated.Client && !nodeclient.Unauthenticated(string(identity))
}

// subjectKey is a FlowSchema subject of a stream: kind g (group), s
// (service account: name is NAMESPACE:NAME) or u (user).
type subjectKey struct {
	streamKey
	kind byte
	name string
}

// subjectOf is the FlowSchema subject that covers identity: the
// kubelets' group, the service account, or the user.
func subjectOf(identity string) (kind byte, name string) {
	if _, ok := nodeclient.NodeName(identity); ok {
		return 'g', nodeclient.NodesGroup
	}
	if _, _, ok := nodeclient.ServiceAccount(identity); ok {
		return 's', identity[len(nodeclient.ServiceAccountUserPrefix):]
	}
	return 'u', identity
}

func (k subjectKey) label() string {
	switch k.kind {
	case 'g':
		return "group:" + k.name
	case 's':
		return "serviceaccount:" + k.name
	}
	return "user:" + k.name
}

// forecastKey is a herd_stampede_instances row before its level is named: a
// stream, its latest relist's consistency (numConsistency: none on record)
// and mode, and its instance's class (Leveler.Class).
type forecastKey struct {
	shapeKey
	cons  Consistency
	mode  Mode
	class string
}

type waveKey struct {
	shapeKey
	mode Mode
}

// forecastSums is the forecast of one read, summed over the shards' copies
// (held in the snapshot's scratch, so its maps are reused).
type forecastSums struct {
	rows     map[forecastKey]uint64
	waves    map[waveKey]uint64
	subjects map[subjectKey]uint64
	// Per shard copy: each instance's class and subject, worked out once
	// (by its index in the copy), and the (instance, resource) pairs
	// already counted as a subject: an instance is one subject of a
	// resource however many shapes it reads it in.
	inst    []instanceForecast
	counted map[uint64]struct{}
}

type instanceForecast struct {
	done    bool
	class   string
	kind    byte
	subject string
}

// add aggregates one shard's copy, with no lock held: its live streams
// (watched, relisted or started a relist since liveFrom), those in a wave
// (relisted or started one since waveFrom) and their subjects. An
// instance's identity, key and subject eligibility never change: they are
// read through its pointer.
func (f *forecastSums) add(c *shardCopy, lv Leveler, liveFrom, waveFrom int64) {
	if f.rows == nil {
		f.rows, f.waves, f.subjects, f.counted = map[forecastKey]uint64{}, map[waveKey]uint64{}, map[subjectKey]uint64{}, map[uint64]struct{}{}
	}
	f.inst = slices.Grow(f.inst[:0], len(c.live))[:len(c.live)]
	clear(f.inst)
	clear(f.counted)
	for j := range c.streams {
		ls := &c.streams[j]
		relisted := max(ls.lastRelistNanos, ls.lastStartNanos)
		if max(relisted, ls.lastWatchNanos) < liveFrom {
			continue
		}
		in := c.live[ls.owner].in
		fi := &f.inst[ls.owner]
		if !fi.done {
			fi.done = true
			if lv != nil {
				fi.class = lv.Class(in.Identity)
			}
			if in.subject {
				fi.kind, fi.subject = subjectOf(in.Identity)
			}
		}
		shk := shapeKey{streamKey{clientKey: in.ck, resource: ls.resource}, ls.shape}
		cons := ls.lastCons
		if ls.lastMode == ModeUnknown {
			cons = numConsistency
		}
		f.rows[forecastKey{shapeKey: shk, cons: cons, mode: ls.lastMode, class: fi.class}]++
		if relisted >= waveFrom {
			f.waves[waveKey{shk, ls.lastMode}]++
		}
		if in.subject {
			k := uint64(ls.owner)<<16 | uint64(ls.resource)
			if _, ok := f.counted[k]; !ok {
				f.counted[k] = struct{}{}
				f.subjects[subjectKey{streamKey: shk.streamKey, kind: fi.kind, name: fi.subject}]++
			}
		}
	}
	clear(f.inst) // drop the references to identities' strings
}

// forecast turns the sums of every shard into the forecast's series,
// capped: at most MaxStampedeSeries of each family (the most instances
// first, ties by label values, so the same state always gives the same
// series) and MaxSubjects subjects per (role, client, resource). The
// Leveler names each level once per distinct class and resource. It
// empties the sums.
func (l *Ledger) forecast(f *forecastSums, lv Leveler, s *Snapshot) {
	type levelKey struct {
		class    string
		resource uint16
	}
	levels := map[levelKey]string{}
	merged := map[StampedeCount]uint64{} // by labels, Value 0: two classes may share a level
	for k, n := range f.rows {
		c := StampedeCount{ShapeLabels: l.shapeLabels(k.shapeKey), Consistency: consistencyLabel(k.cons), Mode: k.mode.String()}
		if lv != nil {
			lk := levelKey{k.class, k.resource}
			level, ok := levels[lk]
			if !ok {
				level = lv.PriorityLevel(k.class, l.resources.name(k.resource))
				levels[lk] = level
			}
			c.PriorityLevel = level
		}
		merged[c] += n
	}
	for c, n := range merged {
		c.Value = n
		s.Stampede = append(s.Stampede, c)
	}
	slices.SortFunc(s.Stampede, func(a, b StampedeCount) int {
		return cmp.Or(cmp.Compare(b.Value, a.Value), compareStream(a.ShapeLabels, b.ShapeLabels), cmp.Compare(a.Consistency, b.Consistency),
			cmp.Compare(a.Mode, b.Mode), cmp.Compare(a.PriorityLevel, b.PriorityLevel))
	})
	s.Stampede = s.Stampede[:min(len(s.Stampede), l.cfg.MaxStampedeSeries)]

	for k, n := range f.waves {
		s.Wave = append(s.Wave, WaveCount{ShapeLabels: l.shapeLabels(k.shapeKey), Mode: k.mode.String(), Value: n})
	}
	slices.SortFunc(s.Wave, func(a, b WaveCount) int {
		return cmp.Or(cmp.Compare(b.Value, a.Value), compareStream(a.ShapeLabels, b.ShapeLabels), cmp.Compare(a.Mode, b.Mode))
	})
	s.Wave = s.Wave[:min(len(s.Wave), l.cfg.MaxStampedeSeries)]

	type subjectRow struct {
		key subjectKey
		n   uint64
	}
	all := make([]subjectRow, 0, len(f.subjects))
	for k, n := range f.subjects {
		all = append(all, subjectRow{k, n})
	}
	slices.SortFunc(all, func(a, b subjectRow) int {
		x, y := a.key, b.key
		return cmp.Or(cmp.Compare(x.role, y.role), cmp.Compare(x.client, y.client), cmp.Compare(x.resource, y.resource),
			cmp.Compare(b.n, a.n), cmp.Compare(x.kind, y.kind), strings.Compare(x.name, y.name))
	})
	perStream := 0
	for i, r := range all {
		if i == 0 || r.key.streamKey != all[i-1].key.streamKey {
			perStream = 0
		}
		if perStream++; perStream > l.cfg.MaxSubjects || len(s.StampedeSubjects) >= l.cfg.MaxStampedeSeries {
			continue
		}
		s.StampedeSubjects = append(s.StampedeSubjects, SubjectCount{StreamLabels: l.streamLabels(r.key.streamKey), Subject: r.key.label(), Value: r.n})
	}
	clear(f.rows)
	clear(f.waves)
	clear(f.subjects)
}

// consistencyLabel is the consistency label of a live stream: its latest
// relist's, or "unknown" when none is on record.
func consistencyLabel(c Consistency) string {
	if c >= numConsistency {
		return modeNames[ModeUnknown]
	}
	return c.String()
}
