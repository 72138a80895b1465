// Package analyze is `herd analyze`: it reads kube-apiserver audit logs
// offline and reports what an on-call SRE needs first — which node-side
// clients relist, which identities are stuck in too-large-resourceVersion
// loops or look like ghosts, who creates TokenReviews — without a cluster,
// Prometheus or the exporter (SPEC §2).
//
// It reuses the exporter's parts unchanged, so a report and the metrics of
// `herd exporter` fed the same events agree: audit.Decoder and LineReader
// read the input, ingest.Dedup drops re-sent or concatenated duplicates,
// classify and accounting.Ledger do the books. What it adds is reading whole
// files robustly (one bad line never stops the rest), the per-identity facts
// the ledger does not keep (every source IP, field-selector nodes) and the
// ranking into a report.
package analyze

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/audit"
	"github.com/herd-k8s/herd/exporter/classify"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/exporter/ingest"
	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/forecast"
)

// DefaultTop is how many rows each section shows unless Options.Top says otherwise.
const DefaultTop = 10

// DefaultMaxDocumentBytes caps a file read whole as one JSON document
// (pretty-printed EventList). JSON lines are streamed and have no such cap;
// a document must be held in memory to be decoded, so past this size herd
// asks for JSON lines instead of risking the SRE's laptop.
const DefaultMaxDocumentBytes = 256 << 20

// DefaultMaxProblems is how many bad lines are printed; the rest are only
// counted, so a file of garbage cannot flood the terminal.
const DefaultMaxProblems = 5

// WindowAll as Options.Window makes the windowed columns cover the whole
// input: they then equal the totals.
const WindowAll time.Duration = -1

// maxTrackedIPs and maxTrackedSelectors bound what is remembered per
// instance for the ghost section: enough to show "it came from two hosts".
const (
	maxTrackedIPs       = 8
	maxTrackedSelectors = 8
)

// Options configures a run. The zero value (plus Config) is usable.
type Options struct {
	// Config supplies classification rules, accounting thresholds and the
	// ingest limits (event size, line size, dedup bound): the same file
	// `herd exporter --config` reads, so both classify clients alike. Pass a
	// whole configuration (config.Default or config.Load, then changed); it
	// is validated as the exporter's is. The zero Config means
	// config.Default().
	Config config.Config
	// Window is how far back from the newest event the windowed columns
	// look. 0 means Config's accounting.window (10m by default: what the
	// exporter's alerts would have seen when the log ends); WindowAll means
	// the whole input.
	Window time.Duration
	// Top caps the rows of each section; 0 means DefaultTop.
	Top int
	// IncludeOther also lists clients no rule classifies (controllers,
	// people with kubectl) in the per-instance sections. They are always
	// counted in the headline.
	IncludeOther bool
	// Warn receives one line per problem, `FILE:LINE: reason`: the first
	// MaxProblems bad lines or events, and every read error. nil discards.
	Warn io.Writer
	// MaxProblems caps the bad lines printed; 0 means DefaultMaxProblems,
	// negative prints none.
	MaxProblems int
	// MaxDocumentBytes caps a file read as one JSON document; 0 means
	// DefaultMaxDocumentBytes.
	MaxDocumentBytes int64

	// Cluster sizes the stampede forecast (the apiserver's object counts
	// and sizes, memory and budget: internal/forecast.FromPrometheus, or
	// flags); nil reports the live instances only. Without NominalSeats
	// (sizes from flags, not from the apiservers' metrics) every level's
	// seats follow from the APF configuration and ServerConcurrency.
	Cluster *forecast.Cluster
	// FlowSchemas and PriorityLevels are the APF configuration in force,
	// which names the level serving each client's LISTs and places a
	// guard's precedence; nil means the apiserver's defaults (apfmatch.Default).
	FlowSchemas    []*flowcontrolv1.FlowSchema
	PriorityLevels []*flowcontrolv1.PriorityLevelConfiguration
	// ServerConcurrency is the apiservers' --max-requests-inflight plus
	// --max-mutating-requests-inflight; 0 means
	// apfguard.DefaultServerConcurrency.
	ServerConcurrency int
}

// Analyzer accumulates audit events from any number of inputs into one
// report. It is not safe for concurrent use: inputs are read one after
// another, which is also what makes duplicate detection across them exact.
type Analyzer struct {
	opts       Options
	cfg        config.Config
	classifier *classify.Classifier
	ledger     *accounting.Ledger
	dedup      *ingest.Dedup
	dec        audit.Decoder
	lr         *audit.LineReader // reused across inputs; nil until the first

	counts   EventCounts
	inputs   []InputSummary
	first    int64    // oldest time an event was accounted at, Unix ns; 0 = none yet
	timeline timeline // the log's own time: the newest believed stageTimestamp
	problems int      // problems seen (printed or not)
	printed  int

	// cluster and apf are the forecast's inputs besides the log.
	cluster *forecast.Cluster
	apf     *apfmatch.Config

	facts        map[instKey]*facts
	untrackedIDs int // instances past the facts bound
	// kubeletIPs are the source IPs node identities were seen from: a
	// host-network agent from any other IP runs on no node's host.
	kubeletIPs map[string]bool
}

// sourceIPResolver attributes every request of an identity that names no
// node (a CNI or kube-proxy service account, shared by every node) to its
// source IP. Online the exporter maps the IP to a Node through informers;
// offline there are no Nodes, but the IP still tells one host's agent from
// another's, which is what "which cilium-agent is storming?" needs. Without
// it, all agents of a service account would add up to one instance on node
// "unknown".
type sourceIPResolver struct{}

func (sourceIPResolver) NodeForIP(ip []byte) (string, bool) { return string(ip), true }

// instKey names an instance the way the ledger does with sourceIPResolver:
// identity plus the node from system:node:NAME or, failing that, the
// token's node name, the trusted source IP (accounting.TrustedSourceIP), or
// a field selector ("" when none).
type instKey struct{ identity, node string }

// facts is what the report needs per instance beyond the ledger's counters:
// every source IP (a kubelet seen from two hosts is the ghost incident 000
// describes), nodes named by field selectors that contradict the identity,
// and when the last too-large-RV error happened.
type facts struct {
	ips           []string
	moreIPs       bool
	selectorNodes []string         // kubelets only: field-selector nodes ≠ identity node
	lastTooLarge  map[string]int64 // by resource as the ledger names it; nil until the first
}

// New validates opts and returns an empty Analyzer.
func New(opts Options) (*Analyzer, error) {
	cfg := opts.Config
	if reflect.ValueOf(cfg).IsZero() {
		cfg = config.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("analyze: config: %w", err)
	}
	switch {
	case opts.Window == 0:
	case opts.Window == WindowAll:
	case opts.Window < time.Minute:
		return nil, fmt.Errorf("analyze: window %s: must be at least 1m (or all)", opts.Window)
	}
	if opts.Top < 0 {
		return nil, fmt.Errorf("analyze: top %d: must be at least 1", opts.Top)
	}
	if opts.Top == 0 {
		opts.Top = DefaultTop
	}
	if opts.MaxProblems == 0 {
		opts.MaxProblems = DefaultMaxProblems
	}
	if opts.MaxDocumentBytes <= 0 {
		opts.MaxDocumentBytes = DefaultMaxDocumentBytes
	}
	if opts.Warn == nil {
		opts.Warn = io.Discard
	}
	c, err := classify.New(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("analyze: rules: %w", err)
	}
	lc := cfg.Accounting
	if opts.Window > 0 {
		lc.Window = model.Duration(opts.Window)
	}
	ledger, err := accounting.New(lc, c, sourceIPResolver{})
	if err != nil {
		return nil, fmt.Errorf("analyze: config: %w", err)
	}
	a := &Analyzer{
		opts:       opts,
		cfg:        cfg,
		classifier: c,
		ledger:     ledger,
		// Offline, time does not pass between events: the dedup is given a
		// fixed "now", so it forgets only when full (DedupMaxEntries/2 to
		// DedupMaxEntries pairs), never because the log's clock moved. That
		// catches the same events twice in `cat a.log a.log`.
		dedup:      ingest.NewDedup(time.Hour, cfg.Ingest.DedupMaxEntries),
		dec:        audit.Decoder{MaxEventBytes: cfg.Ingest.MaxEventBytes},
		facts:      map[instKey]*facts{},
		kubeletIPs: map[string]bool{},
		timeline:   timeline{skew: int64(lc.MaxClockSkew)},
	}
	// The ledger bounds future events by its clock: the log's, not the
	// machine's (a log read a month later would bound nothing).
	a.ledger.SetClock(a.timeline.time)
	schemas, levels := opts.FlowSchemas, opts.PriorityLevels
	if schemas == nil && levels == nil {
		schemas, levels = apfmatch.Default()
	}
	a.apf = apfmatch.NewConfig(schemas, levels, apfmatch.HerdGuard)
	a.ledger.SetLeveler(leveler{a.apf})
	if opts.Cluster != nil {
		c := *opts.Cluster
		if len(c.NominalSeats) == 0 {
			// No apiserver metrics: each level's nominal seats, as APF
			// computes them from the shares (apfguard.Seats).
			serverCL := cmp.Or(opts.ServerConcurrency, apfguard.DefaultServerConcurrency)
			c.NominalSeats, c.LimitSeats = map[string]float64{}, map[string]float64{}
			for name, n := range apfguard.Seats(serverCL, levels) {
				c.NominalSeats[name], c.LimitSeats[name] = float64(n), float64(n)
			}
		}
		a.cluster = &c
	}
	return a, nil
}

// CheckInputs verifies, before anything is read, that every path can be
// opened, so a typo in the fifth file name fails the command at once instead
// of after four large files. "-" (standard input) may appear once.
func CheckInputs(paths []string) error {
	if len(paths) == 0 {
		return errors.New("no input files (use - for standard input)")
	}
	stdin := false
	for _, p := range paths {
		if p == "-" {
			if stdin {
				return errors.New("standard input (-) given more than once")
			}
			stdin = true
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("audit log %s: %w", p, err)
		}
		if fi.IsDir() {
			return fmt.Errorf("audit log %s: is a directory", p)
		}
		if !fi.Mode().IsRegular() {
			// A pipe (<(zcat ...), a FIFO) is opened once, when it is read:
			// opening and closing it here could end its writer.
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("audit log %s: %w", p, err)
		}
		f.Close()
	}
	return nil
}

// Run checks every path, reads them in order and returns the report. The
// error is for inputs that cannot be opened at all (see CheckInputs); read
// errors inside a file are printed, recorded in the report's inputs, and do
// not stop the other files.
func Run(paths []string, opts Options) (*Report, error) {
	if err := CheckInputs(paths); err != nil {
		return nil, err
	}
	a, err := New(opts)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		a.ReadFile(p)
	}
	return a.Report(), nil
}

// ReadFile reads one audit log: a path, or "-" for standard input; gzip is
// recognised by its magic bytes. The error (also recorded in the report and
// printed to Warn) is an open or read failure; whatever was read before it
// has been accounted.
func (a *Analyzer) ReadFile(path string) error {
	name := displayName(path)
	f, err := audit.Open(path)
	if err != nil {
		in := InputSummary{Name: name, Error: err.Error()}
		a.inputs = append(a.inputs, in)
		fmt.Fprintf(a.opts.Warn, "%s: %v\n", name, err)
		return err
	}
	defer f.Close()
	return a.Read(name, f)
}

// Read reads one input that is already open; name is used in problem
// reports. See ReadFile.
func (a *Analyzer) Read(name string, r io.Reader) error {
	in := InputSummary{Name: name}
	before := a.counts
	hint := int64(-1)
	if h, ok := r.(interface{ SizeHint() int64 }); ok {
		hint = h.SizeHint()
	}
	err := a.read(name, r, &in, hint)
	in.Events = a.counts.Read - before.Read
	in.Malformed = a.counts.Malformed - before.Malformed
	in.Oversized = a.counts.Oversized - before.Oversized
	if err != nil {
		in.Error = err.Error()
		fmt.Fprintf(a.opts.Warn, "%s: %v\n", name, err)
	}
	a.inputs = append(a.inputs, in)
	return err
}

// problem reports one bad line or event; only the first MaxProblems are
// printed.
func (a *Analyzer) problem(name string, line int64, reason string) {
	a.problems++
	if a.opts.MaxProblems < 0 || a.printed >= a.opts.MaxProblems {
		return
	}
	a.printed++
	if line > 0 {
		fmt.Fprintf(a.opts.Warn, "%s:%d: %s\n", name, line, reason)
	} else {
		fmt.Fprintf(a.opts.Warn, "%s: %s\n", name, reason)
	}
}

// event is the decoder's callback: dedup, account, and note the facts the
// ledger does not keep. It must not keep e or its slices.
func (a *Analyzer) event(e *audit.Event) {
	a.counts.Read++
	// A timestamp before 1970 or none at all cannot be placed in a window
	// (the ledger's windows index buckets by time from the epoch); such an
	// event is placed at the newest time seen so far, counted as untimed,
	// and never moves the span.
	// The request's own timestamp is part of the dedup key: a client that
	// sends the same Audit-ID on every request is not one request.
	reqTS := e.RequestKey()
	untimed := e.StageTimestampNanos <= 0
	if untimed {
		a.counts.Untimed++
		e.StageTimestampNanos = max(a.timeline.now, 1)
	}
	if a.dedup.SeenAt(e.AuditID, e.Stage, reqTS, time.Time{}) {
		a.counts.Duplicate++
		return
	}
	a.counts.Accounted++
	if untimed {
		a.account(e, false, false)
		return
	}
	// Placed on the log's own timeline: an event stamped well ahead of the
	// rest counts at the log's time (timeline).
	a.timeline.admit(e, a.accountTimed)
}

func (a *Analyzer) accountTimed(e *audit.Event, ahead bool) { a.account(e, true, ahead) }

// account charges an event to the ledger at e.StageTimestampNanos and notes
// its facts.
func (a *Analyzer) account(e *audit.Event, timed, ahead bool) {
	if ahead {
		a.counts.Ahead++
	}
	if timed && (a.first == 0 || e.StageTimestampNanos < a.first) {
		a.first = e.StageTimestampNanos
	}
	a.ledger.Account(e)
	a.note(e)
}

// note records an event's source IP, field-selector node and too-large
// error against its instance.
func (a *Analyzer) note(e *audit.Event) {
	cls := a.classifier.Classify(e.User, e.UserAgent)
	if cls.Role == classify.RoleOther && !a.opts.IncludeOther {
		return
	}
	userNode := classify.NodeFromUsername(e.User)
	// The address the apiserver vouches for, never a client's
	// X-Forwarded-For (SPEC §3.1).
	trusted := a.ledger.TrustedSourceIP(e)
	node := userNode
	if node == nil {
		node = e.NodeNameExtra // the ledger's order: token, then the trusted address
	}
	if len(node) == 0 {
		node = trusted
	}
	if len(node) == 0 {
		node = e.Query.FieldSelectorNode
	}
	f := a.facts[instKey{string(e.User), string(node)}]
	if f == nil {
		if len(a.facts) >= a.cfg.Accounting.MaxInstances {
			a.untrackedIDs++
			return
		}
		f = &facts{}
		a.facts[instKey{string(e.User), string(node)}] = f
	}
	if cls.Role == classify.RoleKubelet && userNode != nil && len(trusted) > 0 && !a.kubeletIPs[string(trusted)] &&
		len(a.kubeletIPs) < a.cfg.Accounting.MaxInstances {
		a.kubeletIPs[string(trusted)] = true
	}
	if ip := trusted; len(ip) > 0 && !containsBytes(f.ips, ip) {
		if len(f.ips) < maxTrackedIPs {
			f.ips = append(f.ips, string(ip))
		} else {
			f.moreIPs = true
		}
	}
	if sel := e.Query.FieldSelectorNode; userNode != nil && len(sel) > 0 && string(sel) != string(userNode) &&
		!containsBytes(f.selectorNodes, sel) && len(f.selectorNodes) < maxTrackedSelectors {
		f.selectorNodes = append(f.selectorNodes, string(sel))
	}
	if e.TooLargeResourceVersion {
		res := string(e.Resource)
		if len(e.APIGroup) > 0 {
			res += "." + string(e.APIGroup)
		}
		if f.lastTooLarge == nil {
			f.lastTooLarge = map[string]int64{}
		}
		if e.StageTimestampNanos > f.lastTooLarge[res] {
			f.lastTooLarge[res] = e.StageTimestampNanos
		}
	}
}

func containsBytes(list []string, b []byte) bool {
	for _, s := range list {
		if s == string(b) {
			return true
		}
	}
	return false
}

// displayName is how an input is named in problems: the path, or "stdin".
func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// reasonOf turns a decoder error into the text after `FILE:LINE: `,
// without the line number the caller already prints. A syntax error's byte
// offset is a column in line mode and a file offset in document mode.
func reasonOf(err error, lineMode bool) string {
	var be *audit.BodyError
	var ee *audit.EventError
	switch {
	case errors.As(err, &ee):
		if ee.Where == "event" {
			return ee.Reason
		}
		return ee.Where + ": " + ee.Reason
	case errors.As(err, &be):
		if lineMode {
			return fmt.Sprintf("not JSON: %s (column %d)", be.Msg, be.Offset+1)
		}
		return fmt.Sprintf("not JSON: %s (byte %d of the file)", be.Msg, be.Offset)
	}
	return strings.TrimPrefix(err.Error(), "decode audit body: ")
}
