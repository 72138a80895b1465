// Package metricsdoc reads docs/metrics.md, the reference of every metric
// herd exports, for the tests that hold the mixin's rules, dashboard and
// runbooks to it, and for the metrics' own doc tests (exporter, responder),
// which check the other direction: that what herd exports is what the file
// says.
package metricsdoc

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Family is a documented metric family.
type Family struct {
	// Type is counter, gauge, histogram or summary.
	Type string
	// Labels are the family's labels, in the order the table lists them.
	Labels []string
}

// SpecResponder are the responder's metrics SPEC §4 (§4.2, §4.3) names,
// with their labels: what the mixin may read even before docs/metrics.md
// documents the responder.
var SpecResponder = map[string]Family{
	"herd_responder_actions_total":           {"counter", []string{"action", "result"}},
	"herd_responder_guard_refusals_total":    {"counter", []string{"action", "guard"}},
	"herd_responder_alerts_received_total":   {"counter", []string{"alertname", "status"}},
	"herd_responder_action_duration_seconds": {"histogram", []string{"action"}},
	"herd_responder_leader":                  {"gauge", nil},
	"herd_responder_findings":                {"gauge", []string{"pattern"}},
}

// row is one metric row of the tables: | `herd_name` | type | labels | meaning |.
var row = regexp.MustCompile("^\\|\\s*`(herd_[a-z0-9_]+)`\\s*\\|\\s*(counter|gauge|histogram|summary)\\s*\\|([^|]*)\\|")

// minRows is fewer rows than docs/metrics.md has had since herd's first
// release: finding fewer means the table format changed under the parser.
const minRows = 20

// Read parses the metric tables of the file at path (docs/metrics.md).
func Read(path string) (map[string]Family, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]Family{}
	for line := range strings.SplitSeq(string(b), "\n") {
		m := row.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		var labels []string
		for l := range strings.SplitSeq(m[3], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		out[m[1]] = Family{Type: m[2], Labels: labels}
	}
	if len(out) < minRows {
		return nil, fmt.Errorf("%s: found only %d metrics; has its table format changed?", path, len(out))
	}
	return out, nil
}
