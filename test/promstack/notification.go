package promstack

import (
	"fmt"
	"maps"

	"github.com/prometheus/alertmanager/notify/webhook"
	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"
)

// Fingerprint is an alert's fingerprint as Alertmanager computes it from
// its labels (model.LabelSet.Fingerprint).
func Fingerprint(labels map[string]string) string {
	ls := make(model.LabelSet, len(labels))
	for k, v := range labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls.Fingerprint().String()
}

// Notification is the webhook message (version 4) Alertmanager sends to
// receiver "herd" for one aggregation group (group_by: [alertname]) of
// alerts, all with status: each alert gets the status and, unless it has
// one, its fingerprint; commonLabels are the labels all alerts share. A
// test posts it where Alertmanager would.
func Notification(status string, alerts ...template.Alert) webhook.Message {
	var common template.KV
	for i := range alerts {
		a := &alerts[i]
		a.Status = status
		if a.Fingerprint == "" {
			a.Fingerprint = Fingerprint(a.Labels)
		}
		if common == nil {
			common = maps.Clone(a.Labels)
			continue
		}
		for k, v := range common {
			if a.Labels[k] != v {
				delete(common, k)
			}
		}
	}
	if common == nil {
		common = template.KV{}
	}
	group := template.KV{}
	if name, ok := common["alertname"]; ok {
		group["alertname"] = name
	}
	return webhook.Message{
		Data: &template.Data{
			Receiver: "herd", Status: status, Alerts: alerts,
			GroupLabels: group, CommonLabels: common, CommonAnnotations: template.KV{},
			ExternalURL: "http://alertmanager.test",
		},
		Version:  "4",
		GroupKey: fmt.Sprintf("{}:{alertname=%q}", group["alertname"]),
	}
}
