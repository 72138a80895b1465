package webauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// TokenFile checks bearer tokens against a file that is re-read when it
// changes, so a rotated Secret takes effect without a restart. The file holds
// one token (surrounding whitespace ignored).
type TokenFile struct {
	path string

	mu        sync.Mutex
	sum       [32]byte // sha256 of the token: compare digests so length leaks nothing
	modTime   time.Time
	size      int64
	checkedAt time.Time
}

// NewTokenFile reads path once to fail fast on a missing or empty file.
func NewTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{path: path}
	if err := t.reload(time.Now(), true); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *TokenFile) reload(now time.Time, force bool) error {
	if !force && now.Sub(t.checkedAt) < time.Second {
		return nil
	}
	t.checkedAt = now
	st, err := os.Stat(t.path)
	if err != nil {
		return fmt.Errorf("bearer token file: %w", err)
	}
	if !force && st.ModTime().Equal(t.modTime) && st.Size() == t.size {
		return nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("bearer token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return fmt.Errorf("bearer token file %s is empty", t.path)
	}
	t.sum = sha256.Sum256([]byte(tok))
	t.modTime, t.size = st.ModTime(), st.Size()
	return nil
}

// Allow reports whether r carries the current token. If the file cannot be
// re-read, the last good token stays in force.
//
// The scheme is matched case-insensitively ("bearer", "BEARER"): RFC 7235
// §2.1 makes auth-scheme names case-insensitive.
func (t *TokenFile) Allow(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return t.AllowKey(strings.TrimLeft(tok, " "))
}

// AllowKey reports whether key is the current token: for senders that carry
// it in a header of their own (Kinesis Data Firehose's
// X-Amz-Firehose-Access-Key).
func (t *TokenFile) AllowKey(key string) bool {
	if key == "" {
		return false
	}
	got := sha256.Sum256([]byte(key))
	t.mu.Lock()
	_ = t.reload(time.Now(), false)
	want := t.sum
	t.mu.Unlock()
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
