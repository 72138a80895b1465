package analyze

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/herd-k8s/herd/internal/forecast"
)

// Column caps keep the tables within about 120 columns for usual names; the
// JSON output always has the full values.
const (
	maxIdentity = 44
	maxNode     = 30
	maxResource = 28
	maxIPs      = 2
)

// WriteJSON writes the report as one indented JSON document (docs/analyze.md).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// WriteTable writes the report for a terminal, most important first: what
// was read, one line per finding, then a section per concern with the rows
// and what to do next.
func (r *Report) WriteTable(w io.Writer) error {
	p := &printer{w: w, r: r}
	p.headline()
	p.findings()
	p.roles()
	p.relisting()
	p.tooLarge()
	p.tokenReviews()
	p.ghosts()
	p.consistency()
	p.errors()
	p.forecast()
	p.notes()
	if p.err != nil {
		return fmt.Errorf("write report: %w", p.err)
	}
	return nil
}

// printer writes the table report, keeping the first write error.
type printer struct {
	w   io.Writer
	r   *Report
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

// table prints rows aligned with tabwriter; each row is tab-separated cells.
func (p *printer) table(header string, rows []string) {
	if p.err != nil {
		return
	}
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, row := range rows {
		fmt.Fprintln(tw, row)
	}
	p.err = tw.Flush()
}

// section prints a section title with how many rows it shows of how many.
func (p *printer) section(title string, shown, count int, what string) {
	p.printf("\n== %s", title)
	switch {
	case count == 0:
		p.printf(": none ==\n")
		return
	case shown < count:
		p.printf(" (top %d of %d %s; --top to see more)", shown, count, plural(count, what))
	default:
		p.printf(" (%d %s)", count, plural(count, what))
	}
	p.printf(" ==\n")
}

// clock formats a time: time of day when the input spans one UTC day (the
// date is in the headline), else date and time.
func (p *printer) clock(t *time.Time) string {
	if t == nil {
		return "-"
	}
	if s := p.r.Span; s != nil && s.First.YearDay() == s.Last.YearDay() && s.First.Year() == s.Last.Year() {
		return t.UTC().Format("15:04:05")
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

// windowName is the header of the windowed columns.
func (p *printer) windowName() string {
	if p.r.Window.All {
		return "IN INPUT"
	}
	return "LAST " + shortDuration(time.Duration(p.r.Window.Seconds*float64(time.Second)))
}

func (p *printer) headline() {
	r := p.r
	names := make([]string, 0, len(r.Inputs))
	for _, in := range r.Inputs {
		names = append(names, in.Name)
	}
	files := strings.Join(names, ", ")
	if len(names) > 3 {
		files = fmt.Sprintf("%s, %s and %d more", names[0], names[1], len(names)-2)
	}
	p.printf("herd analyze: %s\n", clean(files))
	if s := r.Span; s != nil {
		p.printf("span:   %s → %s (%s)\n", s.First.Format("2006-01-02 15:04:05"), p.lastFormat(), shortDuration(s.Last.Sub(s.First)))
	} else {
		p.printf("span:   no event had a stageTimestamp\n")
	}
	e := r.Events
	p.printf("events: %d read, %d accounted, %d duplicate, %d malformed, %d oversized", e.Read, e.Accounted, e.Duplicate, e.Malformed, e.Oversized)
	if e.NotAudit > 0 {
		p.printf(", %d not audit", e.NotAudit)
	}
	if e.Malformed+e.Oversized > 0 {
		p.printf(" (skipped; the first are on stderr)")
	}
	p.printf("\n")
	for _, in := range r.Inputs {
		if in.Error != "" {
			p.printf("input:  %s: %s\n", clean(in.Name), clean(in.Error))
		}
	}
	if r.Window.All {
		p.printf("window: the whole input (--window=all): window columns equal the totals\n")
	} else {
		p.printf("window: %q columns count the %s up to the newest event; totals cover the whole input\n",
			p.windowName(), shortDuration(time.Duration(r.Window.Seconds*float64(time.Second))))
	}
}

// lastFormat prints the span's end without repeating its date.
func (p *printer) lastFormat() string {
	s := p.r.Span
	if s.First.Format("2006-01-02") == s.Last.Format("2006-01-02") {
		return s.Last.Format("15:04:05 UTC")
	}
	return s.Last.Format("2006-01-02 15:04:05 UTC")
}

// findings is one line per concern, so the first screen says what is wrong
// and who does it before any table.
func (p *printer) findings() {
	r := p.r
	var lines []string
	if rows := r.Relisting.Rows; len(rows) > 0 {
		x := rows[0]
		lines = append(lines, fmt.Sprintf("relisting:    %s %s relisted %s %d times (%d in %s, %s)%s",
			x.Client, clean(x.Identity), clean(x.Resource), x.Relists, x.WindowRelists, p.windowLabel(), mixText(x.ByConsistency),
			more(r.Relisting.Count-1)))
	}
	if rows := r.TooLarge.Rows; len(rows) > 0 {
		x := rows[0]
		var resources []string
		others := map[Instance]bool{}
		for _, y := range rows {
			if y.Instance == x.Instance {
				res, _, _ := strings.Cut(y.Resource, ".")
				resources = append(resources, res)
			} else {
				others[y.Instance] = true
			}
		}
		n := len(others)
		if r.TooLarge.Count > len(rows) {
			n = -1 // not all rows are shown: the count of instances is unknown here
		}
		lines = append(lines, fmt.Sprintf("too-large RV: %s: %d errors (%s) from %s%s",
			clean(x.Identity), x.instanceErrors, clean(strings.Join(resources, ", ")), clean(ipsText(x.SourceIPs, 4)), more(n)))
	}
	if t := r.TokenReviews; t.TokenReviews > 0 {
		x := t.Rows[0]
		lines = append(lines, fmt.Sprintf("tokenreviews: %d created by %d instances on %d nodes; most by %s %s (%d)",
			t.TokenReviews, t.Count, t.Nodes, x.Client, clean(x.Identity), x.TokenReviews))
	}
	if g := r.Ghosts; g.Count > 0 {
		x := g.Rows[0]
		verify := "verify with kubectl get node " + x.Node
		if x.Attribution == "source_ip" || !validNodeName(x.Node) {
			verify = "find the host by its source IP: kubectl get nodes -o wide"
		}
		lines = append(lines, fmt.Sprintf("ghost?:       %s: %s%s", clean(x.Identity), clean(strings.Join(x.Reasons, ", ")), more(g.Count-1)),
			"              "+verify)
	}
	if f := r.Forecast; len(f.Rows) > 0 && f.Rows[0].Risk {
		x := f.Rows[0]
		lines = append(lines, fmt.Sprintf("stampede:     %s's %g instances relisting %s together would take the apiserver to %s, past the budget %s",
			clean(x.Client), x.Instances, clean(x.Resource), forecast.Bytes(x.PeakBytes), forecast.Bytes(f.BudgetBytes)))
	}
	if len(lines) == 0 {
		lines = append(lines, "nothing stands out: no repeated relists, too-large-RV errors, TokenReviews or ghost signs")
	}
	p.printf("\nFINDINGS\n")
	for _, l := range lines {
		p.printf("  %s\n", l)
	}
}

func (p *printer) windowLabel() string {
	if p.r.Window.All {
		return "the input"
	}
	return "last " + shortDuration(time.Duration(p.r.Window.Seconds*float64(time.Second)))
}

func (p *printer) roles() {
	var rows []string
	other := false
	for _, t := range p.r.Roles {
		if t.Instances == 0 {
			continue
		}
		other = other || t.Role == "other"
		rows = append(rows, fmt.Sprintf("%s\t%d\t%d\t%d\t%d\t%d\t%d", t.Role, t.Instances, t.Requests, t.Relists, t.TooLarge, t.TokenReviews, t.Errors))
	}
	p.printf("\n")
	if len(rows) > 0 {
		p.table("ROLE\tINSTANCES\tREQUESTS\tRELISTS\tTOO-LARGE-RV\tTOKENREVIEWS\t4XX/5XX", rows)
	}
	if len(rows) == 0 {
		p.printf("(no requests at a counted stage)\n")
	}
	if other && !p.r.includeOther {
		p.printf("(role other is counted here only; --include-other lists it in the sections below)\n")
	}
}

func (p *printer) relisting() {
	s := p.r.Relisting
	p.section(fmt.Sprintf("TOP RELISTING INSTANCES: ≥%d relists of one resource", s.Threshold), len(s.Rows), s.Count, "instance stream")
	if len(s.Rows) == 0 {
		return
	}
	var rows []string
	stale := false
	for _, x := range s.Rows {
		note := ""
		if x.PossiblyStale {
			note, stale = "stale?", true
		}
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s",
			x.Client, instanceCell(x.Instance), resourceCell(x.Resource), x.Shape, x.Relists, x.WindowRelists,
			fmt.Sprintf("%d/%d/%d", x.ByConsistency.Cache, x.ByConsistency.Exact, x.ByConsistency.Consistent), p.clock(x.LastRelist), note))
	}
	p.table("CLIENT\tIDENTITY (NODE)\tRESOURCE\tSHAPE\tRELISTS\t"+p.windowName()+"\tCACHE/EXACT/CONS\tLAST RELIST\tNOTE", rows)
	if stale {
		p.printf("stale? = a kubelet over the stale thresholds in the window: stale if its Node exists (cordon it), a ghost if not.\n")
	}
	p.printf("next: read the client's log on NODE for why its watches fail; a storm of unfiltered or consistent LISTs can be\n" +
		"      isolated with an APF FlowSchema (herd responder: isolate).\n")
}

func (p *printer) tooLarge() {
	s := p.r.TooLarge
	p.section("TOO-LARGE RESOURCEVERSION LOOPS", len(s.Rows), s.Count, "instance stream")
	if len(s.Rows) == 0 {
		return
	}
	var rows []string
	for _, x := range s.Rows {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%s",
			identityCell(x.Identity, maxIdentity), nodeCell(x.Instance), cut(ipsText(x.SourceIPs, maxIPs), 40), resourceCell(x.Resource),
			x.Errors, x.WindowErrors, p.clock(x.LastError)))
	}
	p.table("IDENTITY\tNODE\tSOURCE IPS\tRESOURCE\tERRORS\t"+p.windowName()+"\tLAST ERROR", rows)
	p.printf("next: each error is a ~3 s 504 against the error budget. A client asks for a resourceVersion the cache\n" +
		"      never reaches (a kubelet left on a removed node, or one that outlived an etcd restore): find the host\n" +
		"      by SOURCE IPS and restart or stop its kubelet; herd responder can quarantine the identity with APF.\n")
}

func (p *printer) tokenReviews() {
	s := p.r.TokenReviews
	p.section("TOKENREVIEW SOURCES", len(s.Rows), s.Count, "instance")
	if len(s.Rows) == 0 {
		return
	}
	var rows []string
	for _, x := range s.Rows {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%d\t%s", x.Client, nodeCell(x.Instance), x.TokenReviews, identityCell(x.Identity, maxIdentity)))
	}
	p.table("CLIENT\tNODE\tTOKENREVIEWS\tIDENTITY", rows)
	p.printf("total: %d TokenReviews from %d nodes.\n", s.TokenReviews, s.Nodes)
	p.printf("next: kubelets create a TokenReview for every request that authenticates with a bearer token, usually\n" +
		"      metrics-server without --kubelet-client-certificate/--kubelet-client-key; give it a client certificate.\n")
}

func (p *printer) ghosts() {
	s := p.r.Ghosts
	p.section("POSSIBLE GHOSTS", len(s.Rows), s.Count, "instance")
	if len(s.Rows) == 0 {
		return
	}
	p.printf("Leads, not verdicts: herd analyze cannot see the cluster's Nodes.\n")
	var rows []string
	for _, x := range s.Rows {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%s",
			identityCell(x.Identity, maxIdentity), nodeCell(x.Instance), cut(ipsText(x.SourceIPs, maxIPs), 40), clean(strings.Join(x.Reasons, "; "))))
	}
	p.table("IDENTITY\tNODE\tSOURCE IPS\tWHY", rows)
	if s.Verify != "" {
		p.printf("verify with: %s\n", s.Verify)
	}
	p.printf("      NotFound → a ghost: find the host by its source IP (kubectl get nodes -o wide lists the real ones)\n" +
		"      and stop its kubelet. Found → a stale client on a live node: restart it, or cordon the node.\n")
}

func (p *printer) consistency() {
	s := p.r.Consistency
	p.section("RELIST CONSISTENCY BY CLIENT AND RESOURCE", len(s.Rows), s.Count, "stream")
	if len(s.Rows) == 0 {
		return
	}
	var rows []string
	for _, x := range s.Rows {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d",
			x.Role, x.Client, resourceCell(x.Resource), x.Relists, x.Cache, x.Exact, x.Consistent, x.Pages))
	}
	p.table("ROLE\tCLIENT\tRESOURCE\tRELISTS\tCACHE\tEXACT\tCONSISTENT\tPAGES", rows)
	p.printf("consistent = no resourceVersion: since 1.31 served from the watch cache once it has caught up with\n" +
		"etcd, from etcd when it cannot; the cost is the LIST's shape and size. Clients should still list with\n" +
		"resourceVersion=0 or use WatchList (sendInitialEvents=true).\n")
}

func (p *printer) errors() {
	s := p.r.Errors
	p.section("REQUESTS ANSWERED 4XX/5XX", len(s.Rows), s.Count, "row")
	if len(s.Rows) == 0 {
		return
	}
	var rows []string
	for _, x := range s.Rows {
		rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%d\t%d", x.Role, x.Client, cut(x.Verb, 20), x.Code, x.Requests))
	}
	p.table("ROLE\tCLIENT\tVERB\tCODE\tREQUESTS", rows)
}

func (p *printer) notes() {
	if len(p.r.Notes) == 0 {
		return
	}
	p.printf("\nNOTES\n")
	for _, n := range p.r.Notes {
		p.printf("  %s\n", n)
	}
}

// resourceCell shortens resource.group.k8s.io to resource.group, the
// form kubectl also accepts (kubectl get csidrivers.storage), so tables stay
// narrow; JSON has the full name.
func resourceCell(r string) string {
	if res, group, ok := strings.Cut(r, "."); ok && strings.HasSuffix(group, ".k8s.io") {
		r = res + "." + strings.TrimSuffix(group, ".k8s.io")
	}
	return cut(r, maxResource)
}

// nodeCell shows an instance's node, marking a source IP as one.
func nodeCell(in Instance) string {
	if in.Attribution == "source_ip" {
		return cut("ip "+in.Node, maxNode)
	}
	return cut(in.Node, maxNode)
}

// instanceCell is an identity with its node, the node left out when the
// identity already names it (system:node:NAME), to keep rows narrow.
func instanceCell(in Instance) string {
	if in.Attribution == "username" {
		return cut(in.Identity, maxIdentity)
	}
	return identityCell(in.Identity, maxIdentity-maxNode/2) + " (" + nodeCell(in) + ")"
}

// identityCell shortens an identity to n runes. A service account's name is
// at its end (system:serviceaccount:NS:NAME), so it is cut in the middle:
// system:…kube-system:weave-net. Other identities are cut at the end, which
// keeps the start of a long node name (system:node:ip-10-0-31-19.us-wes…).
func identityCell(s string, n int) string {
	s = clean(s)
	r := []rune(s)
	if len(r) <= n || !strings.HasPrefix(s, "system:serviceaccount:") {
		return cut(s, n)
	}
	return "system:…" + string(r[len(r)-(n-len("system:")-1):])
}

// more says how many other rows a finding stands for: " (+2 more)". n < 0
// means some, uncounted.
func more(n int) string {
	switch {
	case n == 0:
		return ""
	case n < 0:
		return " (+ more)"
	}
	return fmt.Sprintf(" (+%d more)", n)
}

// plural makes "instance" "instances" unless n is 1.
func plural(n int, what string) string {
	if n == 1 {
		return what
	}
	return what + "s"
}

// mixText is a consistency mix with only its non-zero parts: "consistent=12".
func mixText(m ConsistencyMix) string {
	var parts []string
	for _, x := range []struct {
		n string
		v uint64
	}{{"cache", m.Cache}, {"exact", m.Exact}, {"consistent", m.Consistent}} {
		if x.v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", x.n, x.v))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

// ipsText lists up to n IPs and how many more there are.
func ipsText(ips []string, n int) string {
	if len(ips) == 0 {
		return "-"
	}
	if len(ips) <= n {
		return strings.Join(ips, ",")
	}
	return fmt.Sprintf("%s,+%d", strings.Join(ips[:n], ","), len(ips)-n)
}

// clean replaces control characters: identities, user agents and
// field-selector values are client-controlled text, and a crafted one must
// not break the table or drive the terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// cut cleans s and shortens it to n runes, marking the cut with "…".
func cut(s string, n int) string {
	s = clean(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// shortDuration prints 10m rather than 10m0s, and whole seconds.
func shortDuration(d time.Duration) string {
	d = d.Round(time.Second)
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// forecast prints the stampede forecast: what one synchronized relist of
// each client's live instances would make the apiserver hold.
func (p *printer) forecast() {
	f := p.r.Forecast
	p.section("STAMPEDE FORECAST: live instances at the end of the input, if they relisted together", len(f.Rows), f.Count, "stream")
	if len(f.Rows) == 0 {
		return
	}
	var rows []string
	for _, x := range f.Rows {
		level := strings.Join(x.PriorityLevels, ",")
		if level == "" {
			level = "-"
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%g\t%s", clean(x.Client), resourceCell(x.Resource), x.Shape, x.Instances, clean(level))
		if f.Sized {
			if x.Sized {
				risk := ""
				if x.Risk {
					risk = "RISK"
				}
				row += fmt.Sprintf("\t%s\t%g\t%g\t%s\t%s\t%g\t%s", forecast.Bytes(x.ListBytes), x.ListSeats, x.Concurrency, forecast.Bytes(x.GrowthBytes), forecast.Bytes(x.PeakBytes), x.SafeConcurrency, risk)
			} else {
				row += "\t(no size)\t\t\t\t\t\t"
			}
		}
		rows = append(rows, row)
	}
	header := "CLIENT\tRESOURCE\tSHAPE\tINSTANCES\tPRIORITY LEVEL"
	if f.Sized {
		header += "\tLIST\tSEATS\tAT ONCE\tGROWTH\tPEAK\tSAFE\t"
	}
	p.table(header, rows)
	if !f.Sized {
		p.printf("the bytes, the peak and the risk need sizes: --objects, --object-bytes and --apiserver-memory,\n" +
			"or --prometheus URL.\n")
		return
	}
	p.printf("budget %s (apiserver memory now %s). AT ONCE: LISTs APF lets run together per apiserver;\nSAFE: how many fit the budget.\n",
		forecast.Bytes(f.BudgetBytes), forecast.Bytes(f.MemoryBytes))
	p.printf("next: herd responder's protect guards RISK rows while HerdStampedeRisk fires;\n" +
		"      herd analyze --apf prints the same guard for kubectl apply (GitOps).\n")
}
