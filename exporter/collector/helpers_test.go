package collector

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/herd-k8s/herd/exporter/accounting"
)

// scrapeOf is a scrape whose ledger snapshot is snap: the state a table
// test puts in.
func scrapeOf(snap accounting.Snapshot) *Scrape {
	s := &Scrape{snapshot: snap}
	s.once.Do(func() {})
	return s
}

// one runs a single collector as a prometheus.Collector.
type one struct {
	c Collector
	s *Scrape
}

func (one) Describe(chan<- *prometheus.Desc) {}
func (o one) Collect(ch chan<- prometheus.Metric) {
	if err := o.c.Update(o.s, ch); err != nil {
		panic(err)
	}
}

// expose is the exposition text of what c exports for s, without HELP
// lines, promlint-checked: the "exposition out" of a table test.
func expose(t *testing.T, c Collector, s *Scrape) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(one{c, s})
	return gatherText(t, reg, nil)
}

// gatherText renders reg's families (but those skip names) as text without
// HELP lines, and fails the test on a promlint problem.
func gatherText(t *testing.T, reg prometheus.Gatherer, skip func(string) bool) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	var buf bytes.Buffer
	for _, mf := range families {
		if skip != nil && skip(mf.GetName()) {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	for _, l := range strings.Split(buf.String(), "\n") {
		if l != "" && !strings.HasPrefix(l, "# HELP ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// tableCase is one row of a collector table test.
type tableCase struct {
	name string
	c    Collector
	s    *Scrape
	want string
}

func runTable(t *testing.T, cases []tableCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.s == nil {
				tc.s = scrapeOf(accounting.Snapshot{})
			}
			got := expose(t, tc.c, tc.s)
			want := strings.TrimSpace(dedent(tc.want))
			if got != want {
				t.Errorf("exposition:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// dedent removes the leading tabs of a raw-string literal's lines.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimLeft(l, "\t")
	}
	return strings.Join(lines, "\n")
}
