package herdtest

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// Gzip returns b as one gzip member: a compressed request body or log file
// for the tests of the readers that inflate them.
func Gzip(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
