package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/herd-k8s/herd/exporter/analyze"
	"github.com/herd-k8s/herd/exporter/config"
)

// analyzeFlags are `herd analyze`'s flags and arguments (SPEC §2, docs/analyze.md).
type analyzeFlags struct {
	files        *[]string
	top          *int
	output       *string
	configFile   *string
	window       *string
	includeOther *bool
}

func addAnalyzeFlags(cmd *kingpin.CmdClause) *analyzeFlags {
	f := &analyzeFlags{}
	f.files = cmd.Arg("file", "Audit log files (JSON lines, EventList JSON, .gz, - for stdin).").Required().Strings()
	f.top = cmd.Flag("top", "Rows per section.").Default(fmt.Sprint(analyze.DefaultTop)).Int()
	f.output = cmd.Flag("output", "Report format: table or json.").Short('o').Default("table").Enum("table", "json")
	f.configFile = cmd.Flag("config", "YAML configuration file, as for herd exporter (classification rules, accounting thresholds).").Default("").String()
	f.window = cmd.Flag("window", "How far back from the newest event the window columns count: a duration (at least 1m), or all for the whole input. Default: accounting.window of --config (10m).").Default("").String()
	f.includeOther = cmd.Flag("include-other", "Also list clients no rule classifies (controllers, kubectl users) in the sections, not only in the totals.").Bool()
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
	return analyze.Options{Config: cfg, Window: window, Top: *f.top, IncludeOther: *f.includeOther, Warn: stderr}, nil
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
	if *f.output == "json" {
		err = report.WriteJSON(stdout)
	} else {
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
