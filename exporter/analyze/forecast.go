package analyze

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	"sigs.k8s.io/yaml"

	"github.com/herd-k8s/herd/exporter/accounting"
	"github.com/herd-k8s/herd/exporter/apf"
	"github.com/herd-k8s/herd/internal/apfguard"
	"github.com/herd-k8s/herd/internal/apfmatch"
	"github.com/herd-k8s/herd/internal/forecast"
)

// The stampede forecast from an audit log (issue 12): the instances are
// the exporter's (accounting's herd_stampede_instances and
// herd_stampede_subjects, live at the log's end), the arithmetic the
// mixin's (internal/forecast), the sizes and seats the apiserver's (flags,
// or its metrics in Prometheus).

// ForecastSection is the report's forecast: one row per (role, client,
// resource, shape) with live instances at the end of the input.
type ForecastSection struct {
	// Sized: the sizes of the cluster were given (Options.Cluster); without
	// them only the instances are known.
	Sized bool `json:"sized"`
	// BudgetBytes is herd:stampede_budget_bytes; MemoryBytes the
	// apiserver's memory now.
	BudgetBytes float64       `json:"budgetBytes"`
	MemoryBytes float64       `json:"memoryBytes"`
	Count       int           `json:"count"`
	Rows        []ForecastRow `json:"rows"`
	// guards are the rows at risk as apfguard would guard them (all, not
	// capped by --top).
	guards []guardPlan
}

// ForecastRow is one stream's forecast: herd:stampede_* as the mixin
// would record them from the same numbers.
type ForecastRow struct {
	Role     string `json:"role"`
	Client   string `json:"client"`
	Resource string `json:"resource"`
	Shape    string `json:"shape"`
	// Instances live at the end of the input (a watch or a relist within
	// accounting.liveWindow).
	Instances float64 `json:"instances"`
	// PriorityLevels serve the stream's LISTs (from the FlowSchemas given,
	// or the apiserver's suggested ones).
	PriorityLevels []string `json:"priorityLevels"`
	// Subjects are the FlowSchema subjects of the client's live instances.
	Subjects []string `json:"subjects"`
	// Sized: the resource's size is known; the fields below are 0 without.
	Sized           bool    `json:"sized"`
	ListBytes       float64 `json:"listBytes"`
	ListSeats       float64 `json:"listSeats"`
	Concurrency     float64 `json:"concurrency"`
	GrowthBytes     float64 `json:"growthBytes"`
	PeakBytes       float64 `json:"peakBytes"`
	SafeConcurrency float64 `json:"safeConcurrency"`
	// Risk: HerdStampedeRisk would fire.
	Risk bool `json:"risk"`
}

// leveler is accounting.Leveler from a fixed configuration.
type leveler struct{ c *apfmatch.Config }

func (l leveler) Class(identity string) string { return l.c.ClassOf(identity) }
func (l leveler) PriorityLevel(class, resource string) string {
	return apf.Level(l.c, class, resource)
}

// forecastSection builds the section from the snapshot's live instances.
func (a *Analyzer) forecastSection(snap accounting.Snapshot) ForecastSection {
	var rows []forecast.Row
	levels := map[[4]string][]string{}
	for _, c := range snap.Stampede {
		rows = append(rows, forecast.Row{Role: c.Role, Client: c.Client, Resource: c.Resource, Shape: c.Shape,
			Consistency: c.Consistency, Mode: c.Mode, PriorityLevel: c.PriorityLevel, Instances: float64(c.Value)})
		k := [4]string{c.Role, c.Client, c.Resource, c.Shape}
		if c.PriorityLevel != "" && !slices.Contains(levels[k], c.PriorityLevel) {
			levels[k] = append(levels[k], c.PriorityLevel)
		}
	}
	subjects := map[[3]string][]string{}
	for _, s := range snap.StampedeSubjects {
		k := [3]string{s.Role, s.Client, s.Resource}
		subjects[k] = append(subjects[k], s.Subject)
	}
	var cluster forecast.Cluster
	if a.cluster != nil {
		cluster = *a.cluster
	}
	sec := ForecastSection{Sized: a.cluster != nil, BudgetBytes: cluster.BudgetBytes, MemoryBytes: cluster.MemoryBytes}
	for _, s := range forecast.Forecast(rows, cluster) {
		k := [4]string{s.Role, s.Client, s.Resource, s.Shape}
		subs := slices.Clone(subjects[[3]string{s.Role, s.Client, s.Resource}])
		slices.Sort(subs)
		slices.Sort(levels[k])
		sec.Rows = append(sec.Rows, ForecastRow{
			Role: s.Role, Client: s.Client, Resource: s.Resource, Shape: s.Shape, Instances: s.Instances,
			PriorityLevels: append([]string{}, levels[k]...), Subjects: append([]string{}, subs...),
			Sized: s.Sized, ListBytes: s.ListBytes, ListSeats: s.ListSeats, Concurrency: s.Concurrency,
			GrowthBytes: s.GrowthBytes, PeakBytes: s.PeakBytes, SafeConcurrency: s.SafeConcurrency, Risk: s.Risk,
		})
	}
	// At risk first, then the most growth, then the most instances.
	slices.SortStableFunc(sec.Rows, func(x, y ForecastRow) int {
		return cmp.Or(boolFirst(x.Risk, y.Risk), cmp.Compare(y.GrowthBytes, x.GrowthBytes), cmp.Compare(y.Instances, x.Instances),
			cmp.Compare(x.Client, y.Client), cmp.Compare(x.Resource, y.Resource), cmp.Compare(x.Shape, y.Shape))
	})
	sec.guards = a.guardPlans(sec.Rows)
	sec.Count = len(sec.Rows)
	sec.Rows = capRows(sec.Rows, a.opts.Top)
	return sec
}

func boolFirst(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return -1
	}
	return 1
}

// guardPlan is the guard of one (role, client, resource) at risk, or why
// there is none.
type guardPlan struct {
	role, client, resource string
	shapes                 []string
	schema                 *flowcontrolv1.FlowSchema
	why                    string // no schema: why
	note                   string
}

// guardPlans are the guards protect would apply for the rows at risk in a
// guarded shape: one FlowSchema per (role, client, resource), since a
// FlowSchema routes every LIST of the resource by its subjects.
func (a *Analyzer) guardPlans(rows []ForecastRow) []guardPlan {
	var plans []guardPlan
	index := map[[3]string]int{}
	for _, r := range rows {
		if !r.Risk || !slices.Contains(apfguard.GuardedShapes, r.Shape) {
			continue
		}
		k := [3]string{r.Role, r.Client, r.Resource}
		if i, ok := index[k]; ok {
			plans[i].shapes = append(plans[i].shapes, r.Shape)
			continue
		}
		index[k] = len(plans)
		plans = append(plans, a.guardPlan(r))
	}
	return plans
}

func (a *Analyzer) guardPlan(r ForecastRow) guardPlan {
	p := guardPlan{role: r.Role, client: r.Client, resource: r.Resource, shapes: []string{r.Shape}}
	var (
		subjects []flowcontrolv1.Subject
		ids      []string
		passed   []string
	)
	for _, s := range r.Subjects {
		sub, id, why := apfguard.SubjectOf(s)
		if why != "" {
			passed = append(passed, s+" ("+why+")")
			continue
		}
		subjects, ids = append(subjects, sub), append(ids, id)
	}
	switch {
	case len(subjects) == 0 && len(passed) == 0:
		p.why = "the log names no identity of its live instances herd may put in a FlowSchema (identity-classified, authenticated)"
		return p
	case len(subjects) == 0:
		p.why = "no subject can go in a FlowSchema: " + strings.Join(passed, "; ")
		return p
	case len(subjects) > apfguard.MaxSubjects:
		p.why = fmt.Sprintf("the client runs as %d different subjects; herd puts at most %d in one FlowSchema", len(subjects), apfguard.MaxSubjects)
		return p
	}
	plural, group, _ := strings.Cut(r.Resource, ".")
	serving, servingName := int32(10000), "none (catch-all)"
	for _, id := range ids {
		if fs, _ := a.apf.Serve(apfmatch.UserOf(id), apfmatch.List(r.Resource)); fs != nil && fs.Spec.MatchingPrecedence < serving {
			serving, servingName = fs.Spec.MatchingPrecedence, fs.Name
		}
	}
	prec, ok := apfguard.Precedence(apfguard.ProtectPrecedence, serving)
	if !ok {
		p.why = fmt.Sprintf("its LISTs are served by FlowSchema %s at precedence %d; a guard must come after system-node-high (%d) and before it",
			servingName, serving, apfguard.SystemNodeHighPrecedence)
		return p
	}
	fs := apfguard.FlowSchema(GuardName(r.Client, r.Resource), apfguard.ProtectLevel, prec, apfguard.ListRule(group, plural, subjects))
	fs.Labels = apfguard.GitOpsLabels()
	fs.Annotations = map[string]string{
		"herd.dev/action": "protect", "herd.dev/role": r.Role, "herd.dev/client": r.Client, "herd.dev/resource": r.Resource,
		"herd.dev/generated-by": "herd analyze --apf",
	}
	p.schema = fs
	p.note = fmt.Sprintf("before %s at %d", servingName, serving)
	if len(passed) > 0 {
		p.note += "; passed over " + strings.Join(passed, "; ")
	}
	return p
}

// GuardName names a GitOps guard: herd-protect-CLIENT-RESOURCE, never one
// of the responder's slots (herd-protect-N: a client name is not a number
// followed by nothing).
func GuardName(client, resource string) string {
	return apfguard.ProtectLevel + "-" + client + "-" + resource
}

// WriteAPF writes, as YAML documents for `kubectl apply -f -`, the
// priority level herd-protect of spec and a FlowSchema per client and
// resource the forecast puts at risk (the objects the responder's protect
// applies, under names of their own). Rows herd would not guard are named
// in comments, with why. It refuses a report without sizes: nothing is
// known to be at risk then.
func (r *Report) WriteAPF(w io.Writer, level apfguard.Level) error {
	f := r.Forecast
	if !f.Sized {
		return fmt.Errorf("--apf: the forecast has no sizes: nothing is known to be at risk")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# herd analyze --apf: herd's standing guard against a synchronized relist (issue 12).\n")
	fmt.Fprintf(&b, "# Budget %s, apiserver memory %s now. Apply with kubectl apply --server-side -f -.\n", forecast.Bytes(f.BudgetBytes), forecast.Bytes(f.MemoryBytes))
	if len(f.guards) == 0 {
		fmt.Fprintf(&b, "# No client's predicted peak is above the budget: no FlowSchema; the level is herd's installation (the chart installs it too).\n")
	}
	for _, g := range f.guards {
		if g.schema == nil {
			fmt.Fprintf(&b, "# %s/%s LISTs of %s (shapes %s) are at risk, not guarded: %s\n", g.role, clean(g.client), clean(g.resource), strings.Join(g.shapes, ", "), clean(g.why))
			continue
		}
		fmt.Fprintf(&b, "# %s: %s/%s LISTs of %s (shapes %s), %s\n", g.schema.Name, g.role, clean(g.client), clean(g.resource), strings.Join(g.shapes, ", "), clean(g.note))
	}
	docs := []any{apfguard.ProtectLevelObject(level)}
	for _, g := range f.guards {
		if g.schema != nil {
			docs = append(docs, g.schema)
		}
	}
	for _, d := range docs {
		// Objects to apply: no status, no empty creationTimestamp.
		var m map[string]any
		raw, err := yaml.Marshal(d)
		if err == nil {
			err = yaml.Unmarshal(raw, &m)
		}
		if err != nil {
			return fmt.Errorf("--apf: %w", err)
		}
		delete(m, "status")
		if meta, ok := m["metadata"].(map[string]any); ok {
			delete(meta, "creationTimestamp")
		}
		out, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("--apf: %w", err)
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write objects: %w", err)
	}
	return nil
}
