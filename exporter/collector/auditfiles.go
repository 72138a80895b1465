package collector

import "github.com/prometheus/client_golang/prometheus"

var (
	fileRotationsDesc = prometheus.NewDesc(namespace+"_audit_file_rotations_total",
		"Rename rotations of a followed audit log file (--audit.log-file).", []string{"file"}, nil)
	fileTruncationsDesc = prometheus.NewDesc(namespace+"_audit_file_truncations_total",
		"Truncations (copytruncate) of a followed audit log file; lines written just before one may be lost.", []string{"file"}, nil)
	fileOversizedDesc = prometheus.NewDesc(namespace+"_audit_file_oversized_lines_total",
		"Lines of a followed audit log file skipped for exceeding ingest.maxEventBytes.", []string{"file"}, nil)
)

// fileCollector exports the followed audit log files' rotation and
// truncation counts, so a log pipeline that rotates faster than herd reads
// shows up.
type fileCollector struct{ files map[string]FileSource }

func (c fileCollector) Update(_ *Scrape, ch chan<- prometheus.Metric) error {
	for path, f := range c.files {
		st := f.Stats()
		ch <- prometheus.MustNewConstMetric(fileRotationsDesc, prometheus.CounterValue, float64(st.Rotations), path)
		ch <- prometheus.MustNewConstMetric(fileTruncationsDesc, prometheus.CounterValue, float64(st.Truncations), path)
		ch <- prometheus.MustNewConstMetric(fileOversizedDesc, prometheus.CounterValue, float64(st.Oversized), path)
	}
	return nil
}
