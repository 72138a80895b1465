package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/herd-k8s/herd/exporter/analyze"
	"github.com/herd-k8s/herd/exporter/config"
	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/forecast"
	"github.com/herd-k8s/herd/internal/nodeclient"
	"github.com/herd-k8s/herd/responder/policy"
)

// analyzeFlags are `herd analyze`'s flags and arguments (SPEC §2, docs/analyze.md).
type analyzeFlags struct {
	files        *[]string
	top          *int
	output       *string
	configFile   *string
	window       *string
	includeOther *bool

	// The stampede forecast's sizes (issue 12): flags, or Prometheus.
	objects, objectBytes          *[]string
	memory, memoryLimit           *string
	apiservers, serverConcurrency *int
	prometheus, apiserverSelector *string
	flowSchemas, responderConfig  *string
	apf                           *bool
}

func addAnalyzeFlags(cmd *kingpin.CmdClause) *analyzeFlags {
	f := &analyzeFlags{}
	f.files = cmd.Arg("file", "Audit log files (JSON lines, EventList JSON, .gz, - for stdin).").Required().Strings()
	f.top = cmd.Flag("top", "Rows per section.").Default(fmt.Sprint(analyze.DefaultTop)).Int()
	f.output = cmd.Flag("output", "Report format: table or json.").Short('o').Default("table").Enum("table", "json")
	f.configFile = cmd.Flag("config", "YAML configuration file, as for herd exporter (classification rules, accounting thresholds).").Default("").String()
	f.window = cmd.Flag("window", "How far back from the newest event the window columns count: a duration (at least 1m), or all for the whole input. Default: accounting.window of --config (10m).").Default("").String()
	f.includeOther = cmd.Flag("include-other", "Also list clients no rule classifies (controllers, kubectl users) in the sections, not only in the totals.").Bool()
	f.objects = cmd.Flag("objects", "Stampede forecast: how many objects of a resource the cluster stores, RESOURCE=COUNT (pods=2000; nodes=N sizes spec.nodeName LISTs). Repeatable.").PlaceHolder("RESOURCE=COUNT").Strings()
	f.objectBytes = cmd.Flag("object-bytes", "Stampede forecast: the average stored size of one object, RESOURCE=BYTES (pods=10800). Repeatable; needs --objects for the same resource.").PlaceHolder("RESOURCE=BYTES").Strings()
	f.memory = cmd.Flag("apiserver-memory", "Stampede forecast: the apiserver's resident memory now (and its usual), bytes or a quantity (500Mi).").Default("").String()
	f.memoryLimit = cmd.Flag("apiserver-memory-limit", "Stampede forecast: the apiserver's memory limit; without it the budget is 3 × --apiserver-memory.").Default("").String()
	f.apiservers = cmd.Flag("apiservers", "Stampede forecast: how many apiservers share the clients' connections.").Default("1").Int()
	f.serverConcurrency = cmd.Flag("server-concurrency", "Stampede forecast: the apiservers' --max-requests-inflight + --max-mutating-requests-inflight (APF's seats) when not read from Prometheus.").Default("600").Int()
	f.prometheus = cmd.Flag("prometheus", "Stampede forecast: read the sizes, memory and seats from the Prometheus that scrapes the apiservers (instead of the flags above).").PlaceHolder("URL").Default("").String()
	f.apiserverSelector = cmd.Flag("apiserver-selector", "With --prometheus: the PromQL matchers of the apiservers' series.").Default(forecast.DefaultAPIServerSelector).String()
	f.flowSchemas = cmd.Flag("flowschemas", "The cluster's APF configuration (kubectl get flowschemas,prioritylevelconfigurations -o yaml); default: the apiserver's suggested one.").PlaceHolder("FILE").Default("").String()
	f.apf = cmd.Flag("apf", "Print, instead of the report, the FlowSchemas and PriorityLevelConfiguration herd's protect would apply for the clients at risk, as YAML for kubectl apply (needs the forecast's sizes).").Bool()
	f.responderConfig = cmd.Flag("responder-config", "With --apf: herd responder's --config, whose actions.protect sizes the level herd-protect (default: the shipped settings).").PlaceHolder("FILE").Default("").String()
	return f
}

// options turns the flags into analyze.Options; its errors are bad flags.
func (f *analyzeFlags) options(stderr io.Writer) (analyze.Options, error) {
	cfg := config.Default()
	if *f.configFile != "" {
		var err error
		if cfg, err = config.Load(*f.configFile); err != nil {
			return analyze.Options{}, err
		}
	}
	if *f.top < 1 || *f.top > 10000 {
		return analyze.Options{}, fmt.Errorf("--top %d: must be 1..10000", *f.top)
	}
	var window time.Duration
	switch w := strings.TrimSpace(*f.window); w {
	case "":
	case "all":
		window = analyze.WindowAll
	default:
		d, err := time.ParseDuration(w)
		if err != nil {
			return analyze.Options{}, fmt.Errorf("--window %q: want a duration such as 10m or 1h, or all", w)
		}
		if d < time.Minute {
			return analyze.Options{}, fmt.Errorf("--window %s: must be at least 1m, or all", d)
		}
		window = d
	}
	sized := *f.prometheus != "" || len(*f.objects) > 0 || len(*f.objectBytes) > 0 || *f.memory != ""
	switch {
	case *f.apf && !sized:
		return analyze.Options{}, errors.New("--apf needs the forecast's sizes: give --prometheus URL, or --objects, --object-bytes and --apiserver-memory")
	case *f.apf && *f.output != "table":
		return analyze.Options{}, errors.New("--apf prints YAML objects: --output does not apply")
	case !*f.apf && *f.responderConfig != "":
		return analyze.Options{}, errors.New("--responder-config sizes --apf's level: it needs --apf")
	}
	opts := analyze.Options{Config: cfg, Window: window, Top: *f.top, IncludeOther: *f.includeOther, Warn: stderr}
	var err error
	if opts.Cluster, err = f.cluster(); err != nil {
		return analyze.Options{}, err
	}
	if *f.serverConcurrency < 1 {
		return analyze.Options{}, fmt.Errorf("--server-concurrency %d: must be at least 1", *f.serverConcurrency)
	}
	opts.ServerConcurrency = *f.serverConcurrency
	if *f.flowSchemas != "" {
		if opts.FlowSchemas, opts.PriorityLevels, err = analyze.ReadAPFObjects(*f.flowSchemas); err != nil {
			return analyze.Options{}, fmt.Errorf("--flowschemas %w", err)
		}
	}
	return opts, nil
}

// cluster reads the forecast's sizes from the flags or Prometheus; nil
// when none are given.
func (f *analyzeFlags) cluster() (*forecast.Cluster, error) {
	byFlags := len(*f.objects) > 0 || len(*f.objectBytes) > 0 || *f.memory != "" || *f.memoryLimit != ""
	if *f.apiservers < 1 {
		return nil, fmt.Errorf("--apiservers %d: must be at least 1", *f.apiservers)
	}
	if *f.prometheus != "" {
		if byFlags {
			return nil, errors.New("--prometheus reads the sizes and memory: leave out --objects, --object-bytes and --apiserver-memory")
		}
		u, err := url.Parse(*f.prometheus)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("--prometheus %q: want an http(s) URL such as http://prometheus:9090", *f.prometheus)
		}
		limit, err := quantityFlag("--apiserver-memory-limit", *f.memoryLimit)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := forecast.FromPrometheus(ctx, *f.prometheus, *f.apiserverSelector, limit, 30*time.Second, nil)
		if err != nil {
			return nil, err
		}
		return &c, nil
	}
	if !byFlags {
		return nil, nil
	}
	counts, err := resourceValues("--objects", "COUNT", *f.objects)
	if err != nil {
		return nil, err
	}
	sizes, err := resourceValues("--object-bytes", "BYTES", *f.objectBytes)
	if err != nil {
		return nil, err
	}
	c := forecast.Cluster{StoredBytes: map[string]float64{}, Objects: counts, APIServers: *f.apiservers}
	for _, kv := range *f.objectBytes {
		r, _, _ := strings.Cut(kv, "=")
		n, ok := counts[r]
		if !ok {
			return nil, fmt.Errorf("--object-bytes %s: no --objects %s=COUNT to multiply it by", kv, r)
		}
		c.StoredBytes[r] = n * sizes[r]
	}
	if len(c.StoredBytes) == 0 {
		return nil, errors.New("the forecast needs --objects and --object-bytes of at least one resource")
	}
	if *f.memory == "" {
		return nil, errors.New("--objects and --object-bytes need --apiserver-memory (the apiserver's memory now: where a stampede starts from)")
	}
	if c.MemoryBytes, err = quantityFlag("--apiserver-memory", *f.memory); err != nil {
		return nil, err
	}
	limit, err := quantityFlag("--apiserver-memory-limit", *f.memoryLimit)
	if err != nil {
		return nil, err
	}
	c.BudgetBytes = forecast.Budget(limit, c.MemoryBytes)
	return &c, nil
}

// resourceValues parses repeated RESOURCE=N flags (N a whole number ≥ 0).
func resourceValues(flag, what string, values []string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, kv := range values {
		r, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%s %q: want RESOURCE=%s, e.g. pods=2000", flag, kv, what)
		}
		if !nodeclient.ValidResource(r) {
			return nil, fmt.Errorf("%s %q: %q is not a resource (plural, or plural.group as herd labels resources: endpointslices.discovery.k8s.io)", flag, kv, r)
		}
		n, err := strconv.ParseUint(v, 10, 53)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %s must be a whole number ≥ 0", flag, kv, what)
		}
		if _, dup := out[r]; dup {
			return nil, fmt.Errorf("%s %s: given twice", flag, r)
		}
		out[r] = float64(n)
	}
	return out, nil
}

// quantityFlag parses bytes given as a number or a quantity (500Mi, 2G);
// "" is 0.
func quantityFlag(flag, s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil || q.Sign() <= 0 {
		return 0, fmt.Errorf("%s %q: want bytes, e.g. 524288000 or 500Mi", flag, s)
	}
	return q.AsApproximateFloat64(), nil
}

// paths are the file arguments. kingpin's lexer hands a lone "-" over as an
// empty argument; no file is named "", so that is standard input.
func (f *analyzeFlags) paths() []string {
	out := make([]string, len(*f.files))
	for i, p := range *f.files {
		if p == "" {
			p = "-"
		}
		out[i] = p
	}
	return out
}

// runAnalyze reads the inputs and prints the report. Exit codes: 2 for bad
// flags, config or an input that cannot be opened (checked before anything is
// read); 1 when no event could be read from any input, or the report cannot be
// written; 0 otherwise, even with skipped lines (they are counted in the
// report and the first are printed to stderr).
func runAnalyze(f *analyzeFlags, stdout, stderr io.Writer) int {
	opts, err := f.options(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "herd analyze: %v\n", err)
		return 2
	}
	report, err := analyze.Run(f.paths(), opts)
	if err != nil {
		fmt.Fprintf(stderr, "herd analyze: %v\n", err)
		return 2
	}
	switch {
	case *f.apf:
		err = f.writeAPF(report, stdout)
	case *f.output == "json":
		err = report.WriteJSON(stdout)
	default:
		err = report.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "herd analyze: %v\n", err)
		return 1
	}
	if skipped := report.Events.Malformed + report.Events.Oversized; skipped > 0 {
		fmt.Fprintf(stderr, "herd analyze: skipped %d malformed or oversized lines/events (the first are listed above)\n", skipped)
	}
	if report.Events.Read == 0 {
		fmt.Fprintf(stderr, "herd analyze: no audit events could be read from %s\n", strings.Join(f.paths(), ", "))
		return 1
	}
	return 0
}

// writeAPF prints the guard objects, herd-protect sized by the responder's
// policy (--responder-config, or the shipped defaults).
func (f *analyzeFlags) writeAPF(report *analyze.Report, w io.Writer) error {
	pol := policy.Default()
	if *f.responderConfig != "" {
		var err error
		if pol, err = policy.Load(*f.responderConfig); err != nil {
			return fmt.Errorf("--responder-config: %w", err)
		}
	}
	l := pol.Actions.Protect.Level()
	return report.WriteAPF(w, apfguard.Level{Shares: l.PriorityLevelShares, Queues: l.Queues, HandSize: l.HandSize, QueueLengthLimit: l.QueueLengthLimit})
}
