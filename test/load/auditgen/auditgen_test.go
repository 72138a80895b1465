package auditgen

import (
	"encoding/json"
	"strings"
	"testing"

	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"github.com/herd-k8s/herd/exporter/audit"
)

func TestCorpus(t *testing.T) {
	c := New(Options{Nodes: 50, BatchSize: 100})
	if c.Len() != 3 || c.Events() != 300 || c.Instances() != 150 {
		t.Fatalf("Len %d Events %d Instances %d", c.Len(), c.Events(), c.Instances())
	}
	var d audit.Decoder
	ids := map[string]bool{}
	users := map[string]bool{}
	var body []byte
	for seq := uint32(1); seq <= 3; seq++ {
		for i := 0; i < c.Len(); i++ {
			body = c.Fill(body, i, seq)
			res, err := d.DecodeBody(body, func(ev *audit.Event) {
				id := string(ev.AuditID)
				if ids[id] {
					t.Errorf("auditID %s repeats", id)
				}
				ids[id] = true
				users[string(ev.User)+" "+string(ev.SourceIP)] = true
				if ev.StageTimestampNanos == 0 || len(ev.UserAgent) == 0 || len(ev.Resource) == 0 {
					t.Errorf("incomplete event %s", id)
				}
			})
			if err != nil || res.Events != c.BatchEvents(i) || res.Malformed+res.Oversized+res.Skipped != 0 {
				t.Fatalf("batch %d: %+v, %v", i, res, err)
			}
			// The same bytes must be a valid audit.k8s.io/v1 EventList.
			var list auditv1.EventList
			if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 100 {
				t.Fatalf("encoding/json: %d items, %v", len(list.Items), err)
			}
			if !strings.HasPrefix(string(list.Items[0].AuditID), "0000000"+string(rune('0'+seq))) {
				t.Errorf("auditID %s not stamped with %d", list.Items[0].AuditID, seq)
			}
		}
	}
	if len(ids) != 900 {
		t.Errorf("%d distinct auditIDs, want 900", len(ids))
	}
	// 50 kubelets, and the two service accounts from 50 node IPs each.
	if len(users) != 150 {
		t.Errorf("%d distinct (user, source IP) pairs, want 150", len(users))
	}
}
