package stack

import (
	"slices"
	"testing"
)

// The simulated agents call from this host: loopback, or the hollow
// Network's gateway when the control plane listens there. Only that
// address is trusted beside loopback.
func TestHostProxies(t *testing.T) {
	for _, c := range []struct {
		address string
		want    []string
	}{
		{"", []string{"127.0.0.1/32"}},
		{"127.0.0.1", []string{"127.0.0.1/32"}},
		{"10.231.4.1", []string{"127.0.0.1/32", "10.231.4.1/32"}},
		{"fd00::1", []string{"127.0.0.1/32", "fd00::1/128"}},
		{"not-an-address", []string{"127.0.0.1/32"}},
	} {
		if got := HostProxies(c.address); !slices.Equal(got, c.want) {
			t.Errorf("HostProxies(%q) = %v, want %v", c.address, got, c.want)
		}
	}
	if got, want := QuotedList([]string{"127.0.0.1/32", "10.231.4.1/32"}), `"127.0.0.1/32", "10.231.4.1/32"`; got != want {
		t.Errorf("QuotedList = %s, want %s", got, want)
	}
}
