package accounting

import (
	"net/netip"
	"unicode/utf8"
	"unsafe"

	"github.com/herd-k8s/herd/exporter/audit"
)

// What herd trusts (SPEC §3.1): the authenticated identity and its token's
// node name, the request the apiserver authorized, and the address of the
// connection the apiserver served. What a client merely claims — its
// User-Agent, X-Forwarded-For, Audit-ID, timestamps — labels and enriches,
// never decides.

// TrustedSourceIP is the source address of e that herd may act on: the last
// entry of sourceIPs, the connection the apiserver served (k8s.io/apimachinery
// @v0.36.3 pkg/util/net/http.go SourceIPs appends the remote address after the
// X-Forwarded-For chain); with trusted proxies configured, the right-most
// entry that is not one of them. Never sourceIPs[0] (Event.SourceIP), which a
// client chooses with X-Forwarded-For. When every entry herd keeps is a
// trusted proxy, the left-most is the best it knows. nil when the event has
// no address the apiserver vouches for: the decoder fills SourceIPTail from
// sourceIPs, and leaves it empty when it knows one address without knowing
// whose it is (a GKE LogEntry's callerIp, kept in SourceIP for display).
func (l *Ledger) TrustedSourceIP(e *audit.Event) []byte {
	n := e.NumSourceIPTail
	if n <= 0 || n > len(e.SourceIPTail) {
		return nil
	}
	if len(l.proxies) == 0 {
		return e.SourceIPTail[n-1]
	}
	for i := n - 1; i >= 0; i-- {
		ip := e.SourceIPTail[i]
		if a, ok := parseAddr(ip); !ok || !l.trustedProxy(a) {
			return ip
		}
	}
	return e.SourceIPTail[0]
}

func (l *Ledger) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseAddr parses a textual address without copying it: b is only read
// during the call (netip keeps no reference to its input; a zone is cloned
// into a unique.Handle), so the hot path does not allocate.
func parseAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	return a, err == nil
}

// labelSafe reports whether b may become a label value. exporter/ingest
// refuses events whose label fields are not UTF-8; the ledger checks the
// fields it reads beyond those, when they would become part of an
// instance, because one bad label value fails every scrape.
func labelSafe(b []byte) bool { return utf8.Valid(b) }

// timestamp is the time an event is accounted at, Unix ns: its
// stageTimestamp, but never later than the receive time plus MaxClockSkew
// (a future event counts now: it can neither empty an instance's windows by
// moving them ahead nor stop later events from counting), and the receive
// time when it has none. The clock is read only when an event is ahead of
// the last reading plus the skew, so honest events rarely cost a clock
// read. Concurrent callers may store their readings out of order: the last
// reading then moves back a little, which costs one more clock read.
func (l *Ledger) timestamp(ts int64) int64 {
	skew := int64(l.cfg.MaxClockSkew)
	if ts > 0 && ts <= l.lastClock.Load()+skew {
		return ts
	}
	now := l.clock()
	l.lastClock.Store(now)
	if ts <= 0 || ts > now+skew {
		return now
	}
	return ts
}
