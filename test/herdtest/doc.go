// Package herdtest is what herd's tests and test tools need besides the
// stack itself (test/stack), in one place instead of one copy per package,
// as net/http/httptest is for HTTP:
//
//   - waiting: Poll, Wait;
//   - a goroutine-safe log sink with a tail for failures: LogBuffer;
//   - certificates: NewCA, CA.Issue, SelfSigned;
//   - Nodes as a registering kubelet makes them: Node, CreateNodes, and
//     Parallel for any other bulk creation;
//   - compressed bodies and logs: Gzip;
//   - the herd binary, built once per test binary (or program): HerdBinary,
//     Main, RepoRoot;
//   - scenarios split into steps that can run alone: Prereq.
package herdtest
