// Command herd measures the node-side clients of a Kubernetes control plane
// and calms them when they stampede. See README.md and SPEC.md.
//
// This file only parses flags and wires parts together; the logic lives in
// exporter/ and responder/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/promslog"
	promslogflag "github.com/prometheus/common/promslog/flag"
	"github.com/prometheus/common/version"
	"k8s.io/klog/v2"

	"github.com/herd-k8s/herd/exporter"
)

func main() {
	if version.Version == "" {
		version.Version = "devel" // built without the Makefile's -ldflags
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errNotBuilt marks a subcommand whose issue has not landed yet.
var errNotBuilt = errors.New("not built yet")

// run is main with its inputs made explicit, so tests can drive it.
func run(args []string, stdout, stderr io.Writer) int {
	app := kingpin.New("herd", "Measures and calms the node-side clients of a Kubernetes control plane.")
	app.UsageWriter(stdout)
	app.ErrorWriter(stderr)
	exited := -1 // --help and --version end parsing through Terminate
	app.Terminate(func(code int) {
		if exited < 0 {
			exited = code
		}
	})
	app.HelpFlag.Short('h')

	logConfig := &promslog.Config{}
	promslogflag.AddFlags(app, logConfig)

	exporterCmd := app.Command("exporter", "Serve Prometheus metrics about node-side clients, fed by kube-apiserver audit events.")
	exporterOpts := addExporterFlags(exporterCmd)
	responderCmd := app.Command("responder", "Serve the Alertmanager webhook that triages and runs guarded remediations.")
	responderOpts := addResponderFlags(responderCmd)
	analyzeCmd := app.Command("analyze", "Report relisting, stuck and ghost clients from audit log files, offline.")
	analyzeOpts := addAnalyzeFlags(analyzeCmd)
	auditPolicyCmd := app.Command("audit-policy", "Print the minimal audit Policy herd needs.")
	auditPolicyOpts := addAuditPolicyFlags(auditPolicyCmd)
	versionCmd := app.Command("version", "Print version, commit and Go version.")

	if len(args) == 0 {
		fmt.Fprintln(stderr, "herd: command not specified (try herd --help)")
		return 2
	}
	cmd, err := app.Parse(args)
	if exited >= 0 {
		return exited
	}
	if err != nil {
		fmt.Fprintf(stderr, "herd: %v\n", err)
		return 2
	}
	switch cmd {
	case versionCmd.FullCommand():
		fmt.Fprintln(stdout, version.Print("herd"))
		return 0
	case exporterCmd.FullCommand():
		return runExporter(exporterOpts, promslog.New(logConfig), stderr)
	case analyzeCmd.FullCommand():
		return runAnalyze(analyzeOpts, stdout, stderr)
	case responderCmd.FullCommand():
		return runResponder(responderOpts, promslog.New(logConfig), stdout, stderr)
	case auditPolicyCmd.FullCommand():
		return runAuditPolicy(auditPolicyOpts, stdout, stderr)
	}
	fmt.Fprintf(stderr, "herd: unknown command %q\n", cmd)
	return 2
}

// exporterGC is the exporter's GOGC. Accounting an audit event allocates
// nothing, so collections are driven by scrapes, debug pages and HTTP
// plumbing, and each marks a live heap of tens of MiB (the dedup tables,
// the ledger): at 50 the heap grows to 1.5× what is live between
// collections instead of 2×, which took the HTTP load test's peak RSS at
// 15,000 instances from 130 to 113 MiB for about twice as many short
// collections (docs/performance.md).
const exporterGC = 50

// exporterGCPercent is the GC percentage to set: exporterGC unless GOGC is
// in the environment, which wins (ok false: leave the runtime's).
func exporterGCPercent(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return exporterGC, true
}

// runExporter serves until SIGINT or SIGTERM.
func runExporter(f *exporterFlags, logger *slog.Logger, stderr io.Writer) int {
	opts, err := f.options()
	if err != nil {
		fmt.Fprintf(stderr, "herd exporter: %v\n", err)
		return 2
	}
	opts.Logger = logger
	// client-go logs through klog; send it to the same structured logger.
	klog.SetSlogLogger(logger)
	if p, ok := exporterGCPercent(os.Getenv); ok {
		debug.SetGCPercent(p)
	}
	e, err := exporter.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "herd exporter: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("starting herd exporter", "version", version.Info(), "web", *f.webListen, "audit", *f.auditListen, "log_files", *f.logFiles)
	if err := e.Run(ctx); err != nil {
		logger.Error("herd exporter stopped", "err", err)
		return 1
	}
	return 0
}
