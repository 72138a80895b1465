// Package promstack runs a real Prometheus and a real Alertmanager as child
// processes of a Go test, so herd's metrics, recording/alerting rules and
// webhook wiring are exercised end to end instead of against mocks.
//
// The binaries come from the Debian packages (install with
// `apt-get install prometheus prometheus-alertmanager`). Versions verified
// with this package on Debian bookworm:
//
//	prometheus / promtool  2.42.0+ds (2.42.0+ds-5+deb12u1)
//	alertmanager           0.25.0    (0.25.0-1+b4), binary /usr/bin/prometheus-alertmanager
//
// Environment variables HERD_PROMETHEUS, HERD_ALERTMANAGER and HERD_PROMTOOL
// override the lookup. A missing binary fails the test with the install hint;
// it is never a skip, because a silently skipped end-to-end test is a test
// that does not exist.
//
// Every process runs in its own process group with SIGKILL as its
// parent-death signal, listens on loopback only, keeps its state in
// t.TempDir(), and is stopped (SIGTERM, then SIGKILL) and reaped in
// t.Cleanup. Its stdout and stderr go to a log file in that directory; the
// tail of the log is printed when the test fails.
//
// Timing: Prometheus 2.42 hands discovered targets to the scrape manager and
// the notifier at most every 5s (a fixed throttle in its discovery manager),
// so the first scrape and the first alert delivered to Alertmanager come
// about 5s after start. Rules evaluate from the first second, and
// StartPrometheus sets --rules.alert.resend-delay to the evaluation interval
// so an alert evaluated before the notifier knew its Alertmanagers is
// re-sent at once instead of a minute later. Give waits at least 15s.
//
// The parent-death signal is delivered when the OS thread that started the
// child exits, so do not call the Start functions from a goroutine that has
// locked its OS thread.
package promstack
