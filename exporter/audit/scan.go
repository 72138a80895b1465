package audit

import (
	"bytes"
	"fmt"
)

// maxDepth bounds how deeply arrays and objects may nest in a body. fastjson
// refuses values nested deeper than 300 and recurses to get there; the scanner
// refuses earlier, iteratively, so a hostile body of 10,000 '[' costs one
// bounded pass and a clear error instead of a deep recursion.
const maxDepth = 256

// The scanner is a validating JSON skipper, and the base of the single-pass
// event reader in extract.go. It exists because herd needs what a parse tree
// does not give: the byte span of each event (for the per-event size limit),
// the byte offset of the first error (so a 400 says where), and a cheap way
// past everything herd does not read (annotations, groups, request bodies)
// without building anything. It allocates nothing on success.
//
// Grammar: RFC 8259, except that string contents are not checked (control
// characters, invalid UTF-8 and unknown escapes pass, as they do in fastjson);
// herd only compares a few ASCII fields, so rejecting a whole batch over a
// stray byte in a user agent would lose data for no gain.

// scanError is a syntax error at a byte offset of the scanned slice.
type scanError struct {
	off int
	msg string
	// strOpen is where the unterminated string the input ended in opened
	// (valid when inString); the message names it because the end of the
	// input alone says little about where the damage is.
	strOpen  int
	inString bool
}

func unterminated(b []byte, open int) *scanError {
	return &scanError{off: len(b), msg: "unexpected end of JSON", strOpen: open, inString: true}
}

func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// describeByte renders the byte at b[i] for an error message.
func describeByte(b []byte, i int) string {
	if i >= len(b) {
		return "end of JSON"
	}
	c := b[i]
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

func unexpected(b []byte, i int, context string) *scanError {
	if i >= len(b) {
		return &scanError{off: len(b), msg: "unexpected end of JSON " + context}
	}
	return &scanError{off: i, msg: "invalid " + describeByte(b, i) + " " + context}
}

// skipString returns the index just past the string whose opening quote is at
// b[i-1]. A quote ends the string unless an odd number of backslashes precede it.
func skipString(b []byte, i int) (int, *scanError) {
	start := i - 1
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, unterminated(b, start)
		}
		q := i + j
		n := 0
		for k := q - 1; k > start && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, nil
		}
		i = q + 1
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipNumber validates an RFC 8259 number starting at b[i].
func skipNumber(b []byte, i int) (int, *scanError) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && isDigit(b[i]):
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return 0, unexpected(b, i, "in number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return 0, unexpected(b, i, "after decimal point in number")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, unexpected(b, i, "in exponent of number")
		}
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	}
	return i, nil
}

func skipLiteral(b []byte, i int, lit string) (int, *scanError) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(b) || b[i+k] != lit[k] {
			return 0, unexpected(b, i+k, "in literal "+lit)
		}
	}
	return i + len(lit), nil
}

// skipValue validates the JSON value starting at b[i] (leading whitespace
// allowed) and returns the index just past it. depth is the nesting depth the
// value sits at; containers beyond maxDepth are refused. It is iterative: the
// only state is a fixed bitset of open containers.
func skipValue(b []byte, i, depth int) (int, *scanError) {
	// Bit k of open is set when the k-th open container (relative to the
	// value) is an object rather than an array.
	var open [maxDepth / 64]uint64
	n := 0 // containers open
	for {
		// Expect a value at i.
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, unexpected(b, i, "looking for beginning of value")
		}
		var err *scanError
		switch c := b[i]; {
		case c == '{' || c == '[':
			if depth+n >= maxDepth {
				return 0, &scanError{off: i, msg: fmt.Sprintf("nesting deeper than %d levels", maxDepth)}
			}
			i = skipWS(b, i+1)
			if c == '{' {
				if i < len(b) && b[i] == '}' {
					i++
					break
				}
				if i, err = skipKey(b, i); err != nil {
					return 0, err
				}
			} else if i < len(b) && b[i] == ']' {
				i++
				break
			}
			if c == '{' {
				open[n/64] |= 1 << (n % 64)
			} else {
				open[n/64] &^= 1 << (n % 64)
			}
			n++
			continue // the container's first value
		case c == '"':
			i, err = skipString(b, i+1)
		case c == 't':
			i, err = skipLiteral(b, i, "true")
		case c == 'f':
			i, err = skipLiteral(b, i, "false")
		case c == 'n':
			i, err = skipLiteral(b, i, "null")
		case c == '-' || isDigit(c):
			i, err = skipNumber(b, i)
		default:
			return 0, unexpected(b, i, "looking for beginning of value")
		}
		if err != nil {
			return 0, err
		}
		// A value ended at i: close containers or move to the next member.
		for {
			if n == 0 {
				return i, nil
			}
			i = skipWS(b, i)
			obj := open[(n-1)/64]&(1<<((n-1)%64)) != 0
			if i >= len(b) {
				if obj {
					return 0, unexpected(b, i, "after object member")
				}
				return 0, unexpected(b, i, "after array element")
			}
			c := b[i]
			if c == ',' {
				i = skipWS(b, i+1)
				if obj {
					if i, err = skipKey(b, i); err != nil {
						return 0, err
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				i++
				n--
				continue
			}
			if obj {
				return 0, unexpected(b, i, "after object member")
			}
			return 0, unexpected(b, i, "after array element")
		}
	}
}

// skipKey validates `"key" :` at b[i] and returns the index past the colon.
func skipKey(b []byte, i int) (int, *scanError) {
	_, i, err := scanKey(b, i)
	return i, err
}

// scanKey reads `"key" :` at b[i]; it returns the raw (still escaped) key and
// the index past the colon.
func scanKey(b []byte, i int) ([]byte, int, *scanError) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, unexpected(b, i, "looking for beginning of object key string")
	}
	end, err := skipString(b, i+1)
	if err != nil {
		return nil, 0, err
	}
	key := b[i+1 : end-1]
	i = skipWS(b, end)
	if i >= len(b) || b[i] != ':' {
		return nil, 0, unexpected(b, i, "after object key")
	}
	return key, i + 1, nil
}

// valueKind names the JSON type of the value starting at b[i], for messages.
func valueKind(b []byte, i int) string {
	if i >= len(b) {
		return "nothing"
	}
	switch c := b[i]; {
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '"':
		return "a string"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	default:
		return "a number"
	}
}
