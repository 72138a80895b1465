// Package nodesim simulates the node-side clients of a Kubernetes control
// plane — kubelet, kube-proxy, calico-node, cilium-agent — against a real
// kube-apiserver (test/controlplane), so that every audit event herd sees in
// tests, drills and the demo is produced by the apiserver itself, with real
// identities, user agents and source IPs.
//
// There are two layers:
//
//   - Client issues one raw request per call (a cache LIST, a consistent LIST,
//     a paginated LIST, a WatchList relist, a plain re-watch, a TokenReview,
//     ...) and returns what the apiserver answered (status code, duration,
//     items). Because each call is exactly one request (or one request per
//     page), a test can predict exactly which audit events appear; this is the
//     layer exact-count tests and the fixture recorder use.
//   - Agent runs client-go reflectors over a set of resources, the way a real
//     kubelet or CNI agent does in steady state: WatchList streaming relists,
//     long watches, backoff and recovery after an apiserver restart. Its knobs
//     (RelistNow, RelistEvery) force relists on demand, and Stats counts what
//     the reflectors asked for.
//
// Everything takes a context and stops cleanly: Agent.Stop waits for its
// goroutines and Client.Close drops idle connections, so tests can check that
// nothing leaks.
package nodesim
