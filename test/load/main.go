// Command load is herd's HTTP load test (SPEC §7, "audit over HTTP"): it
// starts `herd exporter` as a child process on loopback, posts 400-event
// EventList batches to POST /audit from concurrent posters for a fixed time,
// and reports sustained events/s, per-POST latency (p50, p99, max), errors,
// the exporter's RSS and its /metrics scrape time and series count. In the
// same run it puts the same load on a trivial in-process handler that only
// reads the body, so the loopback limit of the machine is visible next to
// herd's figures; and, unless -scrapers=false, the same load on herd once
// more with two more clients looping on GET /metrics and GET
// /debug/clients all the time (issue 16 point 3: reads must not stall
// ingest), so POST latency with and without them is in one report.
//
//	go run ./test/load                      # 30 s each, 5,000 nodes, 4 posters, with and without scrapers
//	go run ./test/load -herd bin/herd -duration 60s -check
//
// The batches come from test/load/auditgen (the hot-path benchmark uses the
// same corpus): 5,000 nodes × kubelet, kube-proxy and cilium-agent, with
// real identities, user agents, source IPs and list/watch mixes, and a fresh
// auditID on every event of every POST.
//
// herd runs with --audit.insecure and --no-kube (no cluster here), in its
// own process group, killed if this process dies (test/proc).
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
	"github.com/herd-k8s/herd/test/hostinfo"
	"github.com/herd-k8s/herd/test/load/auditgen"
	"github.com/herd-k8s/herd/test/proc"
)

// Config is what one run does.
type Config struct {
	Herd             string        // herd binary; "" builds ./cmd/herd into a temp dir
	Nodes            int           // simulated nodes (3 instances each)
	BatchSize        int           // events per POST
	Posters          int           // concurrent senders
	Duration         time.Duration // measured time against herd
	BaselineDuration time.Duration // measured time against the read-only handler; 0 skips it
	Warmup           time.Duration // unmeasured load before each measurement
	MaxRequests      int64         // cap on measured POSTs per target (0: none)
	Timeout          time.Duration // per POST
	Scrapes          int           // /metrics scrapes at the end
	// Scrapers runs the herd load a second time, for Duration, with two
	// more clients looping on GET /metrics and GET /debug/clients.
	Scrapers bool
	Dir      string // for the herd log and binary; "" makes a temp dir
	// Profiles, if set, is a directory that gets CPU profiles of herd
	// (herd's --web.enable-pprof) and of this process for each herd phase,
	// and herd's heap at the end: where the time and memory go under load.
	Profiles string
}

// Targets are SPEC §7's, for the HTTP path.
var Targets = struct {
	EventsPerSecond float64
	P99             time.Duration
	RSSBytes        int64
	Scrape          time.Duration
	Series          int
}{450_000, 20 * time.Millisecond, 128 << 20, 50 * time.Millisecond, 10_000}

// Result is one target's load figures.
type Result struct {
	Name         string        `json:"name"`
	Posts        int64         `json:"posts"`
	Errors       int64         `json:"errors"`
	FirstError   string        `json:"firstError,omitempty"`
	Events       int64         `json:"events"`       // events the target accepted (for herd: accounted, from its answers)
	Duplicates   int64         `json:"duplicates"`   // herd: events it called duplicate (must be 0: every auditID is fresh)
	WarmupEvents int64         `json:"warmupEvents"` // accepted during the unmeasured warm-up
	Elapsed      time.Duration `json:"elapsed"`
	EventsPerSec float64       `json:"eventsPerSecond"`
	BytesPerSec  float64       `json:"bytesPerSecond"`
	// CPU time used during the measured load: by the load tool (posters,
	// and for the baseline also its handler) and by herd's process.
	LoadCPU   time.Duration `json:"loadCPU"`
	TargetCPU time.Duration `json:"targetCPU,omitempty"`
	P50       time.Duration `json:"p50"`
	P99       time.Duration `json:"p99"`
	Max       time.Duration `json:"max"`
}

// Report is a whole run.
type Report struct {
	Date       time.Time `json:"date"`
	GoVersion  string    `json:"goVersion"`
	CPUs       int       `json:"cpus"`
	CPUModel   string    `json:"cpuModel"`
	LoadAvg    [2]string `json:"loadAvg"` // /proc/loadavg at the start and the end: other work on the machine
	Nodes      int       `json:"nodes"`
	Instances  int       `json:"instances"`
	BatchSize  int       `json:"batchSize"`
	BatchBytes int       `json:"batchBytes"` // mean body size
	Posters    int       `json:"posters"`
	Baseline   *Result   `json:"baseline,omitempty"`
	Herd       Result    `json:"herd"`
	// Scraped is the same load on herd with two clients looping on
	// /metrics and /debug/clients meanwhile (Config.Scrapers); Reads are
	// what those clients saw.
	Scraped     *Result       `json:"scraped,omitempty"`
	Reads       []ReadStats   `json:"reads,omitempty"`
	RSSBytes    int64         `json:"rssBytes"`     // VmRSS at the end
	PeakRSS     int64         `json:"peakRssBytes"` // VmHWM
	Scrape      time.Duration `json:"scrape"`       // median of the scrapes
	ScrapeMax   time.Duration `json:"scrapeMax"`
	Series      int           `json:"series"`
	HerdCounted float64       `json:"herdAccounted"`  // herd_audit_events_total{result="accounted"} at the end (warm-up included)
	HerdInst    float64       `json:"herdInstances"`  // herd_instances at the end
	HeapInuse   float64       `json:"heapInuseBytes"` // go_memstats_heap_inuse_bytes at the end
	NextGC      float64       `json:"nextGCBytes"`    // go_memstats_next_gc_bytes at the end
}

// ReadStats are one looping reader's figures during the scraped run.
type ReadStats struct {
	Path   string        `json:"path"`
	Reads  int           `json:"reads"`
	Errors int           `json:"errors"`
	Bytes  int64         `json:"bytes"` // of the last answer
	P50    time.Duration `json:"p50"`
	Max    time.Duration `json:"max"`
}

func main() {
	var c Config
	flag.StringVar(&c.Herd, "herd", "", "herd binary (default: go build ./cmd/herd into a temp dir)")
	flag.IntVar(&c.Nodes, "nodes", 5000, "simulated nodes; each runs a kubelet, kube-proxy and cilium-agent")
	flag.IntVar(&c.BatchSize, "batch", 400, "events per POST (the apiserver's default batch size)")
	flag.IntVar(&c.Posters, "posters", 4, "concurrent posters")
	flag.DurationVar(&c.Duration, "duration", 30*time.Second, "measured load against herd")
	flag.DurationVar(&c.BaselineDuration, "baseline-duration", 0, "measured load against the read-only handler (default: -duration; negative skips it)")
	flag.DurationVar(&c.Warmup, "warmup", 3*time.Second, "unmeasured load before each measurement")
	flag.Int64Var(&c.MaxRequests, "max-requests", 1_000_000, "cap on measured POSTs per target (0: none)")
	flag.DurationVar(&c.Timeout, "timeout", 10*time.Second, "timeout per POST")
	flag.IntVar(&c.Scrapes, "scrapes", 5, "/metrics scrapes at the end")
	flag.BoolVar(&c.Scrapers, "scrapers", true, "run the herd load once more with two clients looping on GET /metrics and GET /debug/clients")
	flag.StringVar(&c.Dir, "dir", "", "directory for the herd binary and log (default: a temp dir, removed)")
	flag.StringVar(&c.Profiles, "profiles", "", "directory for CPU profiles of herd and of the load tool during each herd phase, and herd's heap at the end (go tool pprof)")
	asJSON := flag.Bool("json", false, "print the report as JSON")
	check := flag.Bool("check", false, "exit 1 when a SPEC §7 target is missed")
	flag.Parse()
	if c.BaselineDuration == 0 {
		c.BaselineDuration = c.Duration
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, c, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(2)
	}
	herdtest.PrintReport(os.Stdout, rep, *asJSON)
	if *check && len(rep.Missed()) > 0 {
		os.Exit(1)
	}
}

// Run does one load test; progress goes to log.
func Run(ctx context.Context, c Config, log io.Writer) (*Report, error) {
	if c.Posters <= 0 || c.BatchSize <= 0 || c.Nodes <= 0 || c.Duration <= 0 {
		return nil, errors.New("posters, batch, nodes and duration must be positive")
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	dir, done, err := herdtest.WorkDir(c.Dir, "herd-load-")
	if err != nil {
		return nil, err
	}
	defer done()
	c.Dir = dir
	fmt.Fprintf(log, "load: rendering batches for %d nodes ...\n", c.Nodes)
	corpus := auditgen.New(auditgen.Options{Nodes: c.Nodes, BatchSize: c.BatchSize})
	size := 0
	for i := 0; i < corpus.Len(); i++ {
		size += len(corpus.Template(i))
	}
	rep := &Report{
		Date: time.Now().UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), CPUModel: hostinfo.CPUModel(),
		Nodes: c.Nodes, Instances: corpus.Instances(), BatchSize: c.BatchSize, BatchBytes: size / corpus.Len(), Posters: c.Posters,
		LoadAvg: [2]string{hostinfo.LoadAverageText(), ""},
	}
	defer func() { rep.LoadAvg[1] = hostinfo.LoadAverageText() }()
	var seq atomic.Uint32 // auditID stamps: unique across both targets

	if c.BaselineDuration > 0 {
		fmt.Fprintf(log, "load: baseline (a handler that only reads the body), %v ...\n", c.BaselineDuration)
		r, err := baseline(ctx, c, corpus, &seq)
		if err != nil {
			return nil, err
		}
		rep.Baseline = r
	}

	bin := c.Herd
	if bin == "" {
		fmt.Fprintf(log, "load: go build ./cmd/herd ...\n")
		var err error
		if bin, err = herdtest.BuildHerd(ctx, c.Dir); err != nil {
			return nil, err
		}
	}
	h, err := startHerd(ctx, bin, c.Dir, c.Profiles != "")
	if err != nil {
		return nil, err
	}
	defer h.p.Stop(5 * time.Second)
	fmt.Fprintf(log, "load: herd (pid %d) on %s, %v ...\n", h.p.Pid(), h.audit, c.Duration)
	stopProf := c.profile(ctx, "herd", "http://"+h.web, c.Warmup)
	r, err := drive(ctx, "herd", "http://"+h.audit+"/audit", c, c.Duration, corpus, &seq, func() time.Duration { return hostinfo.ProcCPU(h.p.Pid()) })
	if perr := stopProf(); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return nil, err
	}
	rep.Herd = *r
	if h.p.Crashed() {
		return nil, fmt.Errorf("herd exited during the load:\n%s", h.p.Tail(20))
	}
	if c.Scrapers {
		fmt.Fprintf(log, "load: herd again with two clients looping on /metrics and /debug/clients, %v ...\n", c.Duration)
		stopProf := c.profile(ctx, "readers", "http://"+h.web, 0)
		r, reads, err := scraped(ctx, "http://"+h.audit+"/audit", "http://"+h.web, c, corpus, &seq, func() time.Duration { return hostinfo.ProcCPU(h.p.Pid()) })
		if perr := stopProf(); perr != nil && err == nil {
			err = perr
		}
		if err != nil {
			return nil, err
		}
		rep.Scraped, rep.Reads = r, reads
		if h.p.Crashed() {
			return nil, fmt.Errorf("herd exited during the load:\n%s", h.p.Tail(20))
		}
	}
	rep.RSSBytes, rep.PeakRSS = rss(h.p.Pid())
	if c.Profiles != "" {
		if err := fetchTo(ctx, "http://"+h.web+"/debug/pprof/heap", filepath.Join(c.Profiles, "herd-heap.pb.gz")); err != nil {
			return nil, err
		}
	}
	if err := rep.scrape(ctx, "http://"+h.web+"/metrics", max(c.Scrapes, 1)); err != nil {
		return nil, err
	}
	if _, err := h.p.Stop(5 * time.Second); err != nil {
		return nil, err
	}
	return rep, nil
}

type herdProc struct {
	p          *proc.Process
	web, audit string
}

// startHerd starts `herd exporter` on two free loopback ports (once more on
// other ports if it could not bind) and waits for /healthz.
func startHerd(ctx context.Context, bin, dir string, pprof bool) (*herdProc, error) {
	help, _ := exec.CommandContext(ctx, bin, "exporter", "--help").CombinedOutput()
	h := &herdProc{}
	p, web, err := proc.StartServer(ctx, proc.Server{
		Name: "herd", Bin: bin, LogPath: filepath.Join(dir, "herd.log"), ReadyPath: "/healthz", Timeout: 15 * time.Second,
		Args: func(web string) []string {
			h.audit, _ = proc.FreeAddr() // none: herd fails to listen and says so
			args := []string{"exporter", "--audit.insecure", "--web.listen-address=" + web, "--audit.listen-address=" + h.audit, "--log.level=warn"}
			if bytes.Contains(help, []byte("--[no-]no-kube")) || bytes.Contains(help, []byte("--no-kube")) {
				args = append(args, "--no-kube")
			}
			if pprof {
				args = append(args, "--web.enable-pprof")
			}
			return args
		},
	})
	if err != nil {
		return nil, err
	}
	h.p, h.web = p, web
	return h, nil
}

// profile starts, when c.Profiles is set, a CPU profile of herd (through
// its /debug/pprof/profile, from after skip until about the end of the
// measured load) and one of this process, for the phase name; the function
// it returns waits for both and writes them to c.Profiles as
// herd-cpu-NAME.pb.gz and load-cpu-NAME.pb.gz.
func (c Config) profile(ctx context.Context, name, web string, skip time.Duration) func() error {
	if c.Profiles == "" {
		return func() error { return nil }
	}
	if err := os.MkdirAll(c.Profiles, 0o755); err != nil {
		return func() error { return err }
	}
	self, err := os.Create(filepath.Join(c.Profiles, "load-cpu-"+name+".pb.gz"))
	if err != nil {
		return func() error { return err }
	}
	if err := pprof.StartCPUProfile(self); err != nil {
		self.Close()
		return func() error { return err }
	}
	secs := max(1, int((c.Duration - time.Second).Seconds()))
	done := make(chan error, 1)
	go func() {
		select {
		case <-time.After(skip):
		case <-ctx.Done():
		}
		done <- fetchTo(ctx, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", web, secs), filepath.Join(c.Profiles, "herd-cpu-"+name+".pb.gz"))
	}()
	return func() error {
		pprof.StopCPUProfile()
		err := self.Close()
		if herr := <-done; herr != nil {
			return fmt.Errorf("profile of herd: %w", herr)
		}
		return err
	}
}

// fetchTo GETs url into the file path.
func fetchTo(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// baseline serves POST /audit in-process with a handler that reads the
// body and answers like herd, and drives it like herd.
func baseline(ctx context.Context, c Config, corpus *auditgen.Corpus, seq *atomic.Uint32) (*Result, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	reply := []byte(fmt.Sprintf(`{"accounted":%d,"duplicate":0,"malformed":0,"oversized":0}`+"\n", c.BatchSize))
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(reply)
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	return drive(ctx, "baseline", "http://"+ln.Addr().String()+"/audit", c, c.BaselineDuration, corpus, seq, nil)
}

// drive posts batches from c.Posters goroutines: c.Warmup unmeasured, then
// d (or c.MaxRequests POSTs) measured.
func drive(ctx context.Context, name, url string, c Config, d time.Duration, corpus *auditgen.Corpus, seq *atomic.Uint32, targetCPU func() time.Duration) (*Result, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: c.Posters, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: c.Timeout}
	var warm int64
	if c.Warmup > 0 {
		w, err := load(ctx, name, url, client, c, c.Warmup, 0, corpus, seq, targetCPU)
		if err != nil {
			return nil, err
		}
		if w.Errors > 0 {
			return nil, fmt.Errorf("%s: %d errors during the warm-up, the first: %s", name, w.Errors, w.FirstError)
		}
		warm = w.Events
	}
	r, err := load(ctx, name, url, client, c, d, c.MaxRequests, corpus, seq, targetCPU)
	if r != nil {
		r.WarmupEvents = warm
	}
	return r, err
}

// scraped drives herd like drive (no warm-up: herd is warm) while two
// clients loop on GET /metrics and GET /debug/clients, each as fast as herd
// answers, as an unauthenticated neighbour could.
func scraped(ctx context.Context, url, web string, c Config, corpus *auditgen.Corpus, seq *atomic.Uint32, targetCPU func() time.Duration) (*Result, []ReadStats, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: c.Posters, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: c.Timeout}
	rctx, stop := context.WithCancel(ctx)
	paths := []string{"/metrics", "/debug/clients"}
	reads := make([]ReadStats, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reads[i] = readLoop(rctx, web+path)
		}()
	}
	r, err := load(ctx, "herd + readers", url, client, c, c.Duration, c.MaxRequests, corpus, seq, targetCPU)
	stop()
	wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	for i := range reads {
		reads[i].Path = paths[i]
		if reads[i].Reads == 0 {
			return nil, nil, fmt.Errorf("GET %s: no answer during the load (%d errors)", paths[i], reads[i].Errors)
		}
	}
	return r, reads, nil
}

// readLoop GETs url until ctx ends and reports how it went.
func readLoop(ctx context.Context, url string) ReadStats {
	var st ReadStats
	var lat []time.Duration
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				st.Errors++
			}
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			if ctx.Err() == nil {
				st.Errors++
			}
			continue
		}
		lat = append(lat, time.Since(t0))
		st.Reads++
		st.Bytes = n
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		st.P50, st.Max = lat[len(lat)/2], lat[len(lat)-1]
	}
	return st
}

type posterStats struct {
	lat           []time.Duration
	posts, errors int64
	events, dupes int64
	bytes         int64
	firstErr      string
}

func load(ctx context.Context, name, url string, client *http.Client, c Config, d time.Duration, maxReq int64,
	corpus *auditgen.Corpus, seq *atomic.Uint32, targetCPU func() time.Duration) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var issued atomic.Int64
	stats := make([]posterStats, c.Posters)
	var wg sync.WaitGroup
	own := posterBodies(corpus, c.Posters)
	start, self0, target0 := time.Now(), selfCPU(), cpuOf(targetCPU)
	for p := range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &stats[p]
			st.lat = make([]time.Duration, 0, 1<<14)
			for k := 0; ctx.Err() == nil; k = (k + 1) % len(own[p]) {
				n := issued.Add(1)
				if maxReq > 0 && n > maxReq {
					return
				}
				b := own[p][k]
				s := seq.Add(1)
				corpus.Stamp(b.buf, b.template, s)
				t0 := time.Now()
				accounted, dupes, err := postOnce(client, url, b)
				lat := time.Since(t0)
				select {
				case <-b.closed:
				default:
					select {
					case <-b.closed:
					case <-time.After(c.Timeout):
						// The transport may still read it: stamp a new copy from now on.
						own[p][k] = newPostBody(corpus, b.template)
					}
				}
				st.posts++
				st.lat = append(st.lat, lat)
				if err != nil {
					st.errors++
					if st.firstErr == "" {
						st.firstErr = err.Error()
					}
					continue
				}
				st.events += accounted
				st.dupes += dupes
				st.bytes += int64(len(b.buf))
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return nil, err // interrupted
	}
	r := &Result{Name: name, Elapsed: time.Since(start), LoadCPU: selfCPU() - self0}
	if targetCPU != nil {
		r.TargetCPU = targetCPU() - target0
	}
	var lat []time.Duration
	var bytes int64
	for _, st := range stats {
		r.Posts += st.posts
		r.Errors += st.errors
		r.Events += st.events
		r.Duplicates += st.dupes
		bytes += st.bytes
		lat = append(lat, st.lat...)
		if r.FirstError == "" {
			r.FirstError = st.firstErr
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		r.Max = lat[len(lat)-1]
	}
	r.EventsPerSec = float64(r.Events) / r.Elapsed.Seconds()
	r.BytesPerSec = float64(bytes) / r.Elapsed.Seconds()
	return r, nil
}

var (
	accountedKey = []byte(`"accounted":`)
	duplicateKey = []byte(`"duplicate":`)
)

// postBody is one of a poster's own copies of a template, stamped in place
// before each POST: the posters copy no 500 KB template per request (on 2
// cores the load tool's CPU is taken from herd's), and the baseline is
// driven by the same code, so the comparison stays like for like.
type postBody struct {
	buf      []byte
	template int
	r        bytes.Reader
	closed   chan struct{} // the transport closed the request body: buf may be stamped again
}

func (b *postBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *postBody) Close() error {
	select {
	case b.closed <- struct{}{}:
	default:
	}
	return nil
}

// posterBodies gives each of n posters its own copies of the templates it
// sends: poster p those numbered p, p+n, p+2n... (template p mod the corpus
// size when there are more posters than templates).
func posterBodies(corpus *auditgen.Corpus, n int) [][]*postBody {
	own := make([][]*postBody, n)
	for p := range own {
		for i := p; i < corpus.Len(); i += n {
			own[p] = append(own[p], newPostBody(corpus, i))
		}
		if len(own[p]) == 0 {
			own[p] = append(own[p], newPostBody(corpus, p%corpus.Len()))
		}
	}
	return own
}

func newPostBody(corpus *auditgen.Corpus, i int) *postBody {
	return &postBody{buf: append([]byte(nil), corpus.Template(i)...), template: i, closed: make(chan struct{}, 1)}
}

// postOnce sends one batch; it returns the accounted and duplicate counts
// of a 200 answer. The transport closes b when it is done with it (maybe
// after postOnce returns): wait for b.closed before stamping b again.
func postOnce(client *http.Client, url string, b *postBody) (int64, int64, error) {
	b.r.Reset(b.buf)
	req, err := http.NewRequest(http.MethodPost, url, b)
	if err != nil {
		b.Close()
		return 0, 0, err
	}
	req.ContentLength = int64(len(b.buf))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("%s: %.200s", resp.Status, body)
	}
	return field(body, accountedKey), field(body, duplicateKey), nil
}

func field(b, key []byte) int64 {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0
	}
	b = b[i+len(key):]
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, _ := strconv.ParseInt(string(b[:j]), 10, 64)
	return n
}

// scrapeGap separates the scrapes at the end: longer than the rest herd
// leaves between whole-ledger reads (at most 1 s, exporter/reads.go).
const scrapeGap = 1100 * time.Millisecond

// scrape fetches /metrics n times, scrapeGap apart, and records the median and worst
// duration, the series count and herd's own totals from the last one.
func (rep *Report) scrape(ctx context.Context, url string, n int) error {
	var times []time.Duration
	var body []byte
	for i := 0; i < n; i++ {
		if i > 0 {
			// A scraper polls; back to back, each scrape would also wait
			// for the rest herd leaves ingest after the one before.
			select {
			case <-time.After(scrapeGap):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("scrape: %w", err)
		}
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		times = append(times, time.Since(t0))
		if err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("scrape: %s, %v: %.300s", resp.Status, err, body)
		}
	}
	slices.Sort(times)
	rep.Scrape, rep.ScrapeMax = times[len(times)/2], times[len(times)-1]
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		rep.Series++
		name, value, _ := strings.Cut(line, " ")
		v, _ := strconv.ParseFloat(value, 64)
		switch {
		case strings.HasPrefix(name, "herd_audit_events_total{") && strings.Contains(name, `result="accounted"`):
			rep.HerdCounted += v
		case name == "herd_instances":
			rep.HerdInst = v
		case name == "go_memstats_heap_inuse_bytes":
			rep.HeapInuse = v
		case name == "go_memstats_next_gc_bytes":
			rep.NextGC = v
		}
	}
	return sc.Err()
}

// rss reads VmRSS and VmHWM of pid.
func rss(pid int) (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			cur = n << 10
		case "VmHWM":
			peak = n << 10
		}
	}
	return cur, peak
}

func cpuOf(f func() time.Duration) time.Duration {
	if f == nil {
		return 0
	}
	return f()
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Missed lists the SPEC §7 targets this run missed.
func (rep *Report) Missed() []string {
	var m []string
	h := rep.Herd
	if h.EventsPerSec < Targets.EventsPerSecond {
		m = append(m, fmt.Sprintf("sustained %.0f events/s < %.0f", h.EventsPerSec, Targets.EventsPerSecond))
	}
	if h.Errors > 0 || h.Duplicates > 0 {
		m = append(m, fmt.Sprintf("%d errors, %d duplicates (want 0)", h.Errors, h.Duplicates))
	}
	if h.P99 >= Targets.P99 {
		m = append(m, fmt.Sprintf("p99 %v ≥ %v", h.P99, Targets.P99))
	}
	if s := rep.Scraped; s != nil {
		if s.P99 >= Targets.P99 {
			m = append(m, fmt.Sprintf("p99 with /metrics and /debug/clients read meanwhile %v ≥ %v", s.P99, Targets.P99))
		}
		if s.Errors > 0 || s.Duplicates > 0 {
			m = append(m, fmt.Sprintf("with readers: %d errors, %d duplicates (want 0)", s.Errors, s.Duplicates))
		}
	}
	if rep.RSSBytes >= Targets.RSSBytes {
		m = append(m, fmt.Sprintf("RSS %.1f MiB ≥ %d MiB", mib(rep.RSSBytes), Targets.RSSBytes>>20))
	}
	if rep.Scrape >= Targets.Scrape {
		m = append(m, fmt.Sprintf("scrape %v ≥ %v", rep.Scrape, Targets.Scrape))
	}
	if rep.Series >= Targets.Series {
		m = append(m, fmt.Sprintf("%d series ≥ %d", rep.Series, Targets.Series))
	}
	return m
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// Print writes the report as tables.
func (rep *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "herd HTTP load test, %s, Go %s, %d CPUs (%s)\n", rep.Date.Format("2006-01-02 15:04 MST"), rep.GoVersion, rep.CPUs, rep.CPUModel)
	fmt.Fprintf(w, "%d nodes (%d instances), %d-event EventLists of %.0f KB on average, %d concurrent posters, loopback; load average %s at the start, %s at the end\n\n",
		rep.Nodes, rep.Instances, rep.BatchSize, float64(rep.BatchBytes)/1000, rep.Posters, rep.LoadAvg[0], rep.LoadAvg[1])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tevents/s\tMB/s\tPOSTs\terrors\tdup\tp50\tp99\tmax\tload tool CPU\ttarget CPU\tevents/target-CPU-s\t")
	row := func(r *Result) {
		secs := r.Elapsed.Seconds()
		target, perCPU := "(in-process)", "-"
		if r.TargetCPU > 0 {
			target = fmt.Sprintf("%.2f cores", r.TargetCPU.Seconds()/secs)
			perCPU = fmt.Sprintf("%.0f", float64(r.Events)/r.TargetCPU.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%d\t%d\t%d\t%v\t%v\t%v\t%.2f cores\t%s\t%s\t\n", r.Name, r.EventsPerSec, r.BytesPerSec/1e6, r.Posts, r.Errors, r.Duplicates,
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond),
			r.LoadCPU.Seconds()/secs, target, perCPU)
	}
	if rep.Baseline != nil {
		row(rep.Baseline)
	}
	row(&rep.Herd)
	if rep.Scraped != nil {
		row(rep.Scraped)
	}
	tw.Flush()
	if e := rep.Herd.FirstError; e != "" {
		fmt.Fprintf(w, "first herd error: %s\n", e)
	}
	if len(rep.Reads) > 0 {
		fmt.Fprintf(w, "\nreaders during \"herd + readers\" (each looping, one request at a time):\n")
		rw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(rw, "GET\treads\terrors\tp50\tmax\tbytes\t")
		for _, r := range rep.Reads {
			fmt.Fprintf(rw, "%s\t%d\t%d\t%v\t%v\t%d\t\n", r.Path, r.Reads, r.Errors, r.P50.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond), r.Bytes)
		}
		rw.Flush()
	}
	fmt.Fprintf(w, "\nherd at the end: RSS %.1f MiB (peak %.1f MiB; Go heap in use %.1f MiB, next GC at %.1f MiB); /metrics %d series, scrape %v (worst %v); herd_instances %.0f; accounted %.0f\n",
		mib(rep.RSSBytes), mib(rep.PeakRSS), rep.HeapInuse/(1<<20), rep.NextGC/(1<<20), rep.Series, rep.Scrape.Round(10*time.Microsecond), rep.ScrapeMax.Round(10*time.Microsecond), rep.HerdInst, rep.HerdCounted)
	if m := rep.Missed(); len(m) > 0 {
		fmt.Fprintf(w, "SPEC §7 targets missed: %s\n", strings.Join(m, "; "))
	} else {
		fmt.Fprintln(w, "SPEC §7 targets (≥ 450k events/s, 0 errors, p99 < 20 ms also while /metrics and /debug/clients are read, RSS < 128 MiB, scrape < 50 ms, < 10,000 series): all met")
	}
}
