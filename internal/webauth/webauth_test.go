package webauth

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herd-k8s/herd/test/herdtest"
)

func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if _, err := NewTokenFile(path); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	os.WriteFile(path, []byte(" \n"), 0o600)
	if _, err := NewTokenFile(path); err == nil || err.Error() != "bearer token file "+path+" is empty" {
		t.Errorf("empty file: %v", err)
	}
	os.WriteFile(path, []byte("s3cret\n"), 0o600)
	tf, err := NewTokenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	allow := func(header string) bool {
		r := httptest.NewRequest("POST", "/", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		return tf.Allow(r)
	}
	for header, want := range map[string]bool{
		"Bearer s3cret": true, "": false, "Bearer ": false, "Bearer s3cre": false, "Bearer s3cret-and-more": false,
		"bearer s3cret": true, "BEARER s3cret": true, "Bearer  s3cret": true, "Basic czNjcmV0": false, "s3cret": false,
		"Bearers3cret": false, "Bearer s3cret ": false,
	} {
		if got := allow(header); got != want {
			t.Errorf("Authorization %q: allowed %v, want %v", header, got, want)
		}
	}
	// Rotation: the new token works within about a second, the old one stops.
	os.WriteFile(path, []byte("rotated-token"), 0o600)
	future := time.Now().Add(2 * time.Second)
	os.Chtimes(path, future, future)
	deadline := time.Now().Add(3 * time.Second)
	for !allow("Bearer rotated-token") {
		if time.Now().After(deadline) {
			t.Fatal("rotated token not accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if allow("Bearer s3cret") {
		t.Error("old token still accepted after rotation")
	}
	// A file that cannot be read keeps the last good token in force.
	os.Remove(path)
	time.Sleep(1100 * time.Millisecond)
	if !allow("Bearer rotated-token") {
		t.Error("last good token dropped when the file vanished")
	}
}

func TestListenerAuth(t *testing.T) {
	write := func(name, content string) string { return herdtest.WriteTemp(t, name, content) }
	tests := []struct{ name, content, want string }{
		{"none.yml", "", ""},
		{"basic.yml", "basic_auth_users:\n  alice: $2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG\n", "basic auth"},
	}
	for _, tc := range tests {
		got, err := ListenerAuth(write(tc.name, tc.content))
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if got, err := ListenerAuth(""); got != "" || err != nil {
		t.Errorf("no file: %q, %v", got, err)
	}
	if _, err := ListenerAuth(write("bad.yml", "tls_server_config:\n  client_auth_type: Bogus\n")); err == nil {
		t.Error("invalid web config accepted")
	}
	if _, err := ListenerAuth(filepath.Join(t.TempDir(), "missing.yml")); err == nil {
		t.Error("missing web config accepted")
	}
}
