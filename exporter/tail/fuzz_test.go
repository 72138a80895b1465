package tail

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzFollowChunks writes content to a file in random pieces while a
// Follower reads it in random small chunks, and checks that exactly the
// complete lines are delivered: strings.Split of the content, minus the
// unterminated tail, minus blank and oversized lines, CRLF trimmed.
//
// The next piece is written whenever the follower goes idle at EOF (the
// onIdle hook, in the follower's goroutine), so each input runs the same
// way every time, which the fuzzer needs to minimize and to reproduce. The
// tests in tail_test.go cover a writer racing the follower.
func FuzzFollowChunks(f *testing.F) {
	f.Add([]byte("a\nb\r\n\nccc\n"), uint64(1), uint8(4), uint8(2))
	f.Add([]byte("{\"kind\":\"Event\"}\n{\"kind\":\"Event\",\"big\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\nshort\npartial"), uint64(7), uint8(16), uint8(5))
	f.Add([]byte("\r\n\r\r\n\n\nx\r"), uint64(3), uint8(0), uint8(0))
	f.Add([]byte(strings.Repeat("0123456789abcdef\n", 40)+"tail"), uint64(42), uint8(17), uint8(31))
	// One file for all inputs, emptied each time: creating and removing a
	// directory per input costs milliseconds on some filesystems (ext4
	// mounted with discard), a hundred times the work being tested.
	path := filepath.Join(f.TempDir(), "audit.log")
	f.Fuzz(func(t *testing.T, content []byte, seed uint64, maxLine, readSz uint8) {
		checkFollowChunks(t, path, content, seed, maxLine, readSz)
	})
}

func checkFollowChunks(t *testing.T, path string, content []byte, seed uint64, maxLine, readSz uint8) {
	maxLen := 1 + int(maxLine%64)
	// Tiny reads and writes cut lines at every boundary; they grow with the
	// content so that a large input (which the fuzzer minimizes with
	// thousands of runs) still takes a few hundred system calls, not tens
	// of thousands.
	scale := 1 + len(content)/2048
	rs := (1 + int(readSz%32)) * scale
	parts := strings.Split(string(content), "\n")
	parts = parts[:len(parts)-1] // the unterminated tail, maybe empty
	var want []string
	oversized := 0
	for _, p := range parts {
		switch p = strings.TrimSuffix(p, "\r"); {
		case p == "":
		case len(p) > maxLen:
			oversized++
		default:
			want = append(want, p)
		}
	}

	w, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, seed>>32))
	rest := content
	// Each time the follower reaches EOF: one to three pieces of 1..48
	// bytes (times scale), or, when all is written, stop.
	write := func() {
		if len(rest) == 0 {
			cancel()
			return
		}
		for range 1 + rng.IntN(3) {
			n := min(len(rest), 1+rng.IntN(48*scale))
			if _, err := w.Write(rest[:n]); err != nil {
				t.Error(err)
				cancel()
				return
			}
			rest = rest[n:]
		}
	}
	fl := New(path, Options{
		FromStart: true,
		// With onIdle the follower never sleeps; a long interval also
		// keeps the timer-driven rotation check out of the run, which
		// would make coverage depend on timing.
		PollInterval: time.Hour,
		MaxLineBytes: maxLen,
		Logger:       slog.New(slog.DiscardHandler),
		readSize:     rs,
		onIdle:       write,
	})
	var got []string
	if err := fl.Run(ctx, func(b []byte) { got = append(got, string(b)) }); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rest) > 0 {
		t.Fatalf("timed out with %d of %d bytes unwritten", len(rest), len(content))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines differ (max %d, read size %d)\n got %q\nwant %q", maxLen, rs, got, want)
	}
	st := fl.Stats()
	want0 := Stats{Lines: uint64(len(want)), Bytes: uint64(len(content)), Oversized: uint64(oversized)}
	if st != want0 {
		t.Fatalf("stats %+v, want %+v", st, want0)
	}
}
