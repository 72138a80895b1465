package audit

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/herd-k8s/herd/test/herdtest"
)

// drain reads lr to the end; over-long lines appear as "!<line number>".
func drain(t testing.TB, lr *LineReader) []string {
	t.Helper()
	out := []string{}
	for {
		line, err := lr.Next()
		switch {
		case err == io.EOF:
			return out
		case errors.Is(err, ErrOversized):
			var le *LineError
			if !errors.As(err, &le) || le.Line != lr.Line() {
				t.Fatalf("oversized error %v does not carry line %d", err, lr.Line())
			}
			out = append(out, fmt.Sprintf("!%d", le.Line))
		case err != nil:
			t.Fatalf("Next: %v", err)
		default:
			out = append(out, string(line))
		}
	}
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	tests := []struct {
		name string
		in   string
		max  int
		want []string
	}{
		{"lines", "a\nbb\nccc\n", 0, []string{"a", "bb", "ccc"}},
		{"last line without newline", "a\nb", 0, []string{"a", "b"}},
		{"empty input", "", 0, []string{}},
		{"blank lines", "\n\n", 0, []string{"", ""}},
		{"CRLF", "a\r\nb\r\n\r\n", 0, []string{"a", "b", ""}},
		{"over-long line in the middle", "abc\n123456789\nxy\n", 4, []string{"abc", "!2", "xy"}},
		{"over-long last line without newline", "abc\n123456789", 4, []string{"abc", "!2"}},
		{"exactly the maximum", "abcd\nabcde\n", 4, []string{"abcd", "!2"}},
		{"over-long line far beyond the buffer", "a\n" + long + "\nb\n" + long, 4, []string{"a", "!2", "b", "!4"}},
		{"long lines within the maximum", long + "\n" + long + "x\n", 0, []string{long, long + "x"}},
		{"default maximum is 256 KiB", strings.Repeat("y", 256<<10) + "\n" + strings.Repeat("y", 256<<10+1) + "\nz", 0,
			[]string{strings.Repeat("y", 256<<10), "!2", "z"}},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+EOF": iotest.DataErrReader,
	}
	for _, tt := range tests {
		for rname, wrap := range readers {
			if rname == "one byte" && len(tt.in) > 1<<20 {
				continue
			}
			t.Run(tt.name+"/"+rname, func(t *testing.T) {
				lr := NewLineReader(wrap(strings.NewReader(tt.in)), tt.max)
				got := drain(t, lr)
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("lines %.80q, want %.80q", got, tt.want)
				}
				if lr.Offset() != int64(len(tt.in)) {
					t.Errorf("Offset %d, want %d", lr.Offset(), len(tt.in))
				}
				oversized := 0
				for _, w := range tt.want {
					if strings.HasPrefix(w, "!") {
						oversized++
					}
				}
				if lr.Oversized() != oversized {
					t.Errorf("Oversized %d, want %d", lr.Oversized(), oversized)
				}
				if max := tt.max; max > 0 && len(lr.buf) > max+1+readChunk {
					t.Errorf("buffer grew to %d", len(lr.buf))
				}
			})
		}
	}
}

// growingFile is a file another process appends to: reads past the end
// return io.EOF until more is written.
type growingFile struct{ bytes.Buffer }

func TestLineReaderFollow(t *testing.T) {
	var f growingFile
	lr := NewLineReader(&f, 9)
	lr.Follow = true
	step := func(write string, want ...string) {
		t.Helper()
		f.WriteString(write)
		if got := drain(t, lr); !reflect.DeepEqual(got, append([]string{}, want...)) {
			t.Fatalf("after writing %q: lines %q, want %q", write, got, want)
		}
	}
	step("a\nhalf", "a")
	step("-line\n", "half-line")
	step("", []string{}...)
	step("0123456789", []string{}...) // too long already, but not over yet
	step("abc\nok\n", "!3", "ok")
	if lr.Line() != 4 || lr.Offset() != int64(len("a\nhalf-line\n0123456789abc\nok\n")) {
		t.Errorf("Line %d, Offset %d", lr.Line(), lr.Offset())
	}
	// Rotation: a new file starts numbering again.
	lr.Reset(strings.NewReader("new\n"))
	if got := drain(t, lr); !reflect.DeepEqual(got, []string{"new"}) || lr.Line() != 1 || lr.Offset() != 4 {
		t.Errorf("after Reset: %q, line %d, offset %d", got, lr.Line(), lr.Offset())
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestLineReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	lr := NewLineReader(io.MultiReader(strings.NewReader("a\nb\nc"), iotest.ErrReader(boom)), 0)
	for _, want := range []string{"a", "b"} {
		if line, err := lr.Next(); err != nil || string(line) != want {
			t.Fatalf("Next = %q, %v", line, err)
		}
	}
	_, err := lr.Next()
	var le *LineError
	if !errors.Is(err, boom) || !errors.As(err, &le) || le.Line != 3 || err.Error() != "line 3: boom" {
		t.Fatalf("error = %v", err)
	}

	_, err = NewLineReader(zeroReader{}, 0).Next()
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("endless empty reads: %v", err)
	}

	gz := herdtest.Gzip(t, []byte("line one\nline two\n"))
	zr, err := gzip.NewReader(bytes.NewReader(gz[:len(gz)-6]))
	if err != nil {
		t.Fatal(err)
	}
	lr = NewLineReader(zr, 0)
	var lines []string
	for {
		line, err := lr.Next()
		if err != nil {
			if err == io.EOF || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("truncated gzip: %v", err)
			}
			break
		}
		lines = append(lines, string(line))
	}
	if len(lines) > 2 {
		t.Errorf("lines %q", lines)
	}
}
