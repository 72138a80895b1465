package audit

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// rawStr is where a string field's contents are in the input: still escaped
// when esc is set. set is false when the key was absent or its value was not
// a string (numbers where strings belong count as absent: the apiserver never
// writes them).
type rawStr struct {
	b   []byte
	esc bool
	set bool
}

// rawEvent collects, during the single pass over an event object, where the
// fields herd reads are. Nothing is unescaped or converted until the object
// has ended and is known to be small enough to account.
type rawEvent struct {
	seen       uint32 // f* bits: key present (the first occurrence wins)
	userSeen   uint8  // sub-object key bits, same rule
	refSeen    uint8
	statusSeen uint8
	kind       rawStr
	apiVersion rawStr
	auditID    rawStr
	stage      rawStr
	verb       rawStr
	username   rawStr
	userAgent  rawStr
	sourceIP   rawStr // sourceIPs[0]
	// sourceTail holds the last string entries of sourceIPs, as a ring:
	// entry k of nSource is at sourceTail[k%MaxSourceIPTail].
	sourceTail  [MaxSourceIPTail]rawStr
	nSource     int
	nodeName    rawStr // user.extra[NodeNameKey][0]
	unauthGroup bool   // user.groups holds system:unauthenticated
	latency     [NumLatencyPhases]int64
	resource    rawStr
	subresource rawStr
	apiGroup    rawStr
	namespace   rawStr
	name        rawStr
	message     rawStr
	stageTS     rawStr
	legacyTS    rawStr
	reqTS       rawStr
	uri         rawStr
	code        int32
}

// Top-level keys of an event.
const (
	fKind = 1 << iota
	fAPIVersion
	fAuditID
	fStage
	fVerb
	fUser
	fUserAgent
	fSourceIPs
	fObjectRef
	fResponseStatus
	fStageTimestamp
	fTimestamp
	fRequestURI
	fItems
	fRecords
	fRequestReceivedTimestamp
	fAnnotations
)

// Which nested object a key loop is reading.
type subObject uint8

const (
	subUser subObject = iota
	subObjectRef
	subResponseStatus
)

// scanStringField reads the string at b[i] (b[i] == '"') into dst and
// returns the index past it. Two SIMD searches, for the closing quote and for
// a backslash in between, beat a byte loop on the 20–200-byte values herd
// reads; the escaped case falls back to skipString.
func scanStringField(b []byte, i int, dst *rawStr) (int, *scanError) {
	q := bytes.IndexByte(b[i+1:], '"')
	if q >= 0 && bytes.IndexByte(b[i+1:i+1+q], '\\') < 0 {
		*dst = rawStr{b: b[i+1 : i+1+q], set: true}
		return i + 2 + q, nil
	}
	end, err := skipString(b, i+1)
	if err != nil {
		return 0, err
	}
	*dst = rawStr{b: b[i+1 : end-1], esc: true, set: true}
	return end, nil
}

const (
	swarLo        = 0x0101010101010101
	swarHi        = 0x8080808080808080
	swarQuote     = swarLo * '"'
	swarBackslash = swarLo * '\\'
)

// scanKeyFast reads `"key" :` at b[i] like scanKey, with a byte loop (keys
// are short, so a loop beats IndexByte's call), and reports whether the key
// holds a backslash.
func scanKeyFast(b []byte, i int) (key []byte, next int, esc bool, err *scanError) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false, unexpected(b, i, "looking for beginning of object key string")
	}
	j := i + 1
	// Eight bytes at a time to the first quote or backslash (SWAR: a
	// byte of w^pattern is zero exactly where w has that byte; the lowest
	// flagged byte is exact), then byte by byte through escapes. Keys are
	// 4–30 bytes; this halves the decoder's most frequent loop.
	for j+8 <= len(b) {
		w := binary.LittleEndian.Uint64(b[j:])
		q, bs := w^swarQuote, w^swarBackslash
		if m := ((q-swarLo)&^q | (bs-swarLo)&^bs) & swarHi; m != 0 {
			j += bits.TrailingZeros64(m) >> 3
			break
		}
		j += 8
	}
	for ; j < len(b); j++ {
		c := b[j]
		if c == '"' {
			break
		}
		if c == '\\' {
			esc = true
			j++
		}
	}
	if j >= len(b) {
		return nil, 0, false, unterminated(b, i)
	}
	key = b[i+1 : j]
	k := j + 1
	for k < len(b) && isWS(b[k]) {
		k++
	}
	if k >= len(b) || b[k] != ':' {
		return nil, 0, false, unexpected(b, k, "after object key")
	}
	return key, k + 1, esc, nil
}

// itoa formats a non-negative int without fmt, for error messages.
func itoa(n int) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return string(buf[i:])
}

// keyName returns the key to match: raw, or unescaped into buf when it holds
// a backslash (a key spelled "aud\u0069tID" is still auditID).
func keyName(key []byte, esc bool, buf *[32]byte) []byte {
	if !esc {
		return key
	}
	return unescapeJSON(buf[:0], key)
}

// walkEvent reads the object at b[i], an event candidate enclosed by depth
// containers, in one pass that both validates it and notes where herd's
// fields are, then accounts it (finish). When top is set the object may
// instead be an EventList or a records wrapper, whose entries are delivered
// as its array is read. at says where the event sits, for problem reports.
//
// Duplicate keys: the first occurrence wins, at every level.
func (d *Decoder) walkEvent(b []byte, i, depth int, top bool, at loc, fn func(*Event)) (int, *scanError) {
	if depth >= maxDepth {
		return 0, &scanError{off: i, msg: "nesting deeper than " + itoa(maxDepth) + " levels"}
	}
	start := i
	var (
		ev  rawEvent
		f   form
		err *scanError
		kb  [32]byte
	)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			var (
				key []byte
				esc bool
			)
			if key, i, esc, err = scanKeyFast(b, i); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, unexpected(b, i, "looking for beginning of value")
			}
			var bit uint32
			var dst *rawStr
			switch string(keyName(key, esc, &kb)) {
			case "kind":
				bit, dst = fKind, &ev.kind
			case "apiVersion":
				bit, dst = fAPIVersion, &ev.apiVersion
			case "auditID":
				bit, dst = fAuditID, &ev.auditID
			case "stage":
				bit, dst = fStage, &ev.stage
			case "verb":
				bit, dst = fVerb, &ev.verb
			case "userAgent":
				bit, dst = fUserAgent, &ev.userAgent
			case "stageTimestamp":
				bit, dst = fStageTimestamp, &ev.stageTS
			case "timestamp":
				bit, dst = fTimestamp, &ev.legacyTS
			case "requestURI":
				bit, dst = fRequestURI, &ev.uri
			case "requestReceivedTimestamp":
				bit, dst = fRequestReceivedTimestamp, &ev.reqTS
			case "annotations":
				bit = fAnnotations
			case "user":
				bit = fUser
			case "objectRef":
				bit = fObjectRef
			case "responseStatus":
				bit = fResponseStatus
			case "sourceIPs":
				bit = fSourceIPs
			case "items":
				bit = fItems
			case "records":
				bit = fRecords
			}
			handled := false
			if bit != 0 && ev.seen&bit == 0 {
				ev.seen |= bit
				c := b[i]
				switch {
				case dst != nil:
					if c == '"' {
						i, err = scanStringField(b, i, dst)
						handled = true
					}
				case bit == fUser && c == '{':
					i, err = walkSub(b, i, depth+1, subUser, &ev)
					handled = true
				case bit == fObjectRef && c == '{':
					i, err = walkSub(b, i, depth+1, subObjectRef, &ev)
					handled = true
				case bit == fResponseStatus && c == '{':
					i, err = walkSub(b, i, depth+1, subResponseStatus, &ev)
					handled = true
				case bit == fSourceIPs && c == '[':
					i, err = walkSourceIPs(b, i, depth+1, &ev)
					handled = true
				case bit == fAnnotations && c == '{':
					i, err = walkAnnotations(b, i, depth+1, &ev)
					handled = true
				case top && (bit == fItems || bit == fRecords):
					i, handled, err = d.topArray(b, i, bit == fItems, &f, &ev, fn)
				}
				if err != nil {
					return 0, err
				}
			}
			if !handled {
				if i, err = skipValue(b, i, depth+1); err != nil {
					return 0, err
				}
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, unexpected(b, i, "after object member")
			}
			if b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if b[i] == '}' {
				i++
				break
			}
			return 0, unexpected(b, i, "after object member")
		}
	}
	if top {
		if f == formUndecided {
			f = classify(ev.seen&fKind != 0, kindName(ev.kind), ev.seen&fItems != 0, ev.seen&fRecords != 0)
		}
		if f != formEvent {
			return i, nil
		}
	}
	if at.b == nil {
		at = loc{b: b, off: start, w: whereObject}
	}
	if (top || at.w == whereArray) && !ev.hasEventKeys(b[start:i]) {
		// No auditID, stage, verb or kind: a provider's envelope, or
		// something herd cannot read (envelope.go; cold).
		d.envelope(b[start:i], at, fn)
		return i, nil
	}
	d.finish(&ev, i-start, at, fn)
	return i, nil
}

// kindName is the kind to classify a top-level object by. An escaped kind is
// unescaped (rare: the apiserver never escapes it); 64 raw bytes are enough
// for any spelling of "EventList" (9 × \uXXXX = 54), so a longer one is no
// kind herd knows.
func kindName(k rawStr) []byte {
	if !k.set {
		return nil
	}
	if !k.esc {
		return k.b
	}
	if len(k.b) > 64 {
		return nil
	}
	return unescapeJSON(make([]byte, 0, 64), k.b)
}

// topArray handles the first "items" or "records" key of a top-level object:
// it decides (once) what the object is and, if this array holds its entries,
// walks it. It reports whether it consumed the value.
func (d *Decoder) topArray(b []byte, i int, isItems bool, f *form, ev *rawEvent, fn func(*Event)) (int, bool, *scanError) {
	if *f == formUndecided {
		if ev.seen&fKind != 0 {
			*f = classify(true, kindName(ev.kind), false, false)
		} else {
			var err *scanError
			if *f, err = lookAhead(b, i, isItems); err != nil {
				return 0, false, err
			}
		}
	}
	if isItems && *f != formEventList || !isItems && *f != formRecords {
		return i, false, nil
	}
	switch b[i] {
	case '[':
		w := whereItems
		if !isItems {
			w = whereRecords
		}
		end, err := d.walkArray(b, i, 1, w, fn)
		return end, true, err
	case 'n':
		return i, false, nil // "items": null is how Go encodes an empty list
	}
	name := "EventList items"
	if !isItems {
		name = "records"
	}
	what := valueKind(b, i)
	if _, err := skipValue(b, i, 1); err != nil {
		return 0, false, err
	}
	return 0, false, &scanError{off: i, msg: name + " is " + what + ", want an array"}
}

// walkSub reads user, objectRef or responseStatus (the object at b[i],
// enclosed by depth containers) and notes the keys herd reads in it.
func walkSub(b []byte, i, depth int, sub subObject, ev *rawEvent) (int, *scanError) {
	if depth >= maxDepth {
		return 0, &scanError{off: i, msg: "nesting deeper than " + itoa(maxDepth) + " levels"}
	}
	var (
		err *scanError
		kb  [32]byte
	)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		var (
			key []byte
			esc bool
		)
		if key, i, esc, err = scanKeyFast(b, i); err != nil {
			return 0, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, unexpected(b, i, "looking for beginning of value")
		}
		var (
			bit  uint8
			seen *uint8
			dst  *rawStr
			code bool
		)
		k := keyName(key, esc, &kb)
		switch sub {
		case subUser:
			seen = &ev.userSeen
			switch string(k) {
			case "username":
				bit, dst = 1, &ev.username
			case "groups":
				bit = 2
			case "extra":
				bit = 4
			}
		case subObjectRef:
			seen = &ev.refSeen
			switch string(k) {
			case "resource":
				bit, dst = 1, &ev.resource
			case "subresource":
				bit, dst = 2, &ev.subresource
			case "apiGroup":
				bit, dst = 4, &ev.apiGroup
			case "namespace":
				bit, dst = 8, &ev.namespace
			case "name":
				bit, dst = 16, &ev.name
			}
		case subResponseStatus:
			seen = &ev.statusSeen
			switch string(k) {
			case "code":
				bit, code = 1, true
			case "message":
				bit, dst = 2, &ev.message
			}
		}
		handled := false
		if bit != 0 && *seen&bit == 0 {
			*seen |= bit
			switch {
			case dst != nil && b[i] == '"':
				if i, err = scanStringField(b, i, dst); err != nil {
					return 0, err
				}
				handled = true
			case code && (b[i] == '-' || isDigit(b[i])):
				end, err := skipNumber(b, i)
				if err != nil {
					return 0, err
				}
				ev.code = parseCode(b[i:end])
				i, handled = end, true
			case sub == subUser && bit == 2 && b[i] == '[':
				if i, err = walkGroups(b, i, depth+1, ev); err != nil {
					return 0, err
				}
				handled = true
			case sub == subUser && bit == 4 && b[i] == '{':
				if i, err = walkExtra(b, i, depth+1, ev); err != nil {
					return 0, err
				}
				handled = true
			}
		}
		if !handled {
			if i, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, unexpected(b, i, "after object member")
		}
		if b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if b[i] == '}' {
			return i + 1, nil
		}
		return 0, unexpected(b, i, "after object member")
	}
}

// parseCode reads an HTTP status code: a non-negative integer that fits an
// int32. Anything else (fractions, exponents, negatives, overflow) is 0, "no
// code", rather than a guess.
func parseCode(num []byte) int32 {
	if n, ok := decimal(num, 10); ok && n <= 1<<31-1 {
		return int32(n)
	}
	return 0
}

// decimal parses a non-negative decimal integer of 1 to maxDigits digits;
// anything else (signs, fractions, exponents, more digits) is not ok. A
// maxDigits of at most 18 keeps it from overflowing. The status code, the
// limit parameter and the timestamp's fields are all read with it.
func decimal(b []byte, maxDigits int) (int64, bool) {
	if len(b) == 0 || len(b) > maxDigits {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// walkSourceIPs reads the sourceIPs array at b[i], enclosed by depth
// containers: its first element when that is a string (the client, or
// X-Forwarded-For's first hop) and its last MaxSourceIPTail string elements
// (the last is the connection's address). Elements that are not strings are
// validated and passed over.
func walkSourceIPs(b []byte, i, depth int, ev *rawEvent) (int, *scanError) {
	j, done, err := openContainer(b, i, depth, ']')
	if done || err != nil {
		return j, err
	}
	if j < len(b) && b[j] == '"' {
		// The usual case, one address: no loop.
		end, err := scanStringField(b, j, &ev.sourceTail[0])
		if err != nil {
			return 0, err
		}
		if k := skipWS(b, end); k < len(b) && b[k] == ']' {
			ev.sourceIP, ev.nSource = ev.sourceTail[0], 1
			return k + 1, nil
		}
		ev.sourceTail[0] = rawStr{}
	}
	for idx := 0; ; idx++ {
		if j < len(b) && b[j] == '"' {
			r := &ev.sourceTail[ev.nSource%MaxSourceIPTail]
			if j, err = scanStringField(b, j, r); err != nil {
				return 0, err
			}
			if idx == 0 {
				ev.sourceIP = *r
			}
			ev.nSource++
		} else if j, err = skipValue(b, j, depth+1); err != nil {
			return 0, err
		}
		if j, err = nextElement(b, j); err != nil || j < 0 {
			return -j, err
		}
	}
}

// nextElement reads what follows an array element at b[i]: for a ',' it
// returns the start of the next element; for the closing ']' it returns
// minus the index past it (so callers can tell the two apart cheaply).
func nextElement(b []byte, i int) (int, *scanError) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, unexpected(b, i, "after array element")
	}
	switch b[i] {
	case ',':
		return skipWS(b, i+1), nil
	case ']':
		return -(i + 1), nil
	}
	return 0, unexpected(b, i, "after array element")
}

var (
	groupUnauthenticated = []byte("system:unauthenticated")
	extraNodeName        = []byte("authentication.kubernetes.io/node-name")
	latencyPrefix        = []byte(LatencyAnnotationPrefix)
)

// walkGroups reads user.groups (the array at b[i]) and notes whether it
// holds system:unauthenticated.
func walkGroups(b []byte, i, depth int, ev *rawEvent) (int, *scanError) {
	j, done, err := openContainer(b, i, depth, ']')
	if done || err != nil {
		return j, err
	}
	for {
		if j < len(b) && b[j] == '"' {
			start := j + 1
			if j, err = skipString(b, start); err != nil {
				return 0, err
			}
			g := b[start : j-1]
			switch {
			case len(g) == len(groupUnauthenticated):
				// system:serviceaccounts has the same length: tell them
				// apart by the byte after "system:" before comparing.
				ev.unauthGroup = ev.unauthGroup || g[7] == 'u' && bytes.Equal(g, groupUnauthenticated)
			case len(g) > len(groupUnauthenticated) && len(g) <= 64 && hasBackslash(g):
				var gb [64]byte
				ev.unauthGroup = ev.unauthGroup || bytes.Equal(unescapeJSON(gb[:0], g), groupUnauthenticated)
			}
		} else if j, err = skipValue(b, j, depth+1); err != nil {
			return 0, err
		}
		if j, err = nextElement(b, j); err != nil || j < 0 {
			return -j, err
		}
	}
}

// walkExtra reads user.extra (the object at b[i]) and keeps the first value
// of authentication.kubernetes.io/node-name. Its first occurrence wins. Keys
// of another length are passed over without a comparison: this runs for
// every event, and most carry only a credential-id.
func walkExtra(b []byte, i, depth int, ev *rawEvent) (int, *scanError) {
	i, done, err := openContainer(b, i, depth, '}')
	if done || err != nil {
		return i, err
	}
	for {
		var key []byte
		if key, i, err = memberKey(b, i); err != nil {
			return 0, err
		}
		handled := false
		if !ev.nodeName.set && b[i] == '[' && (len(key) == len(extraNodeName) || len(key) > len(extraNodeName) && hasBackslash(key)) {
			esc := hasBackslash(key)
			var kb [64]byte
			if bytes.Equal(keyName64(key, esc, &kb), extraNodeName) {
				if j := skipWS(b, i+1); j < len(b) && b[j] == '"' {
					if j, err = scanStringField(b, j, &ev.nodeName); err != nil {
						return 0, err
					}
					if j, err = nextElement(b, j); err != nil {
						return 0, err
					}
					if j < 0 {
						i = -j
					} else if i, err = skipRest(b, j, depth+2); err != nil {
						return 0, err
					}
					handled = true
				}
			}
		}
		if !handled {
			if i, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
		}
		if i, err = nextMember(b, i); err != nil || i < 0 {
			return -i, err
		}
	}
}

// openContainer checks the depth of the array or object at b[i] and steps
// inside it: done is set (with the index past it) when it is empty, that is
// when its first non-space byte is end (']' or '}').
func openContainer(b []byte, i, depth int, end byte) (next int, done bool, err *scanError) {
	if depth >= maxDepth {
		return 0, true, &scanError{off: i, msg: "nesting deeper than " + itoa(maxDepth) + " levels"}
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == end {
		return i + 1, true, nil
	}
	return i, false, nil
}

// memberKey reads `"key" :` at b[i] and returns the raw key and the start of
// its value. It finds the key's end with IndexByte (scanKey): the keys of
// user.extra and annotations are long (authentication.kubernetes.io/
// credential-id), where a byte loop costs more than the vector search.
func memberKey(b []byte, i int) ([]byte, int, *scanError) {
	key, next, err := scanKey(b, i)
	if err != nil {
		return nil, 0, err
	}
	i = skipWS(b, next)
	if i >= len(b) {
		return nil, 0, unexpected(b, i, "looking for beginning of value")
	}
	return key, i, nil
}

func hasBackslash(b []byte) bool { return bytes.IndexByte(b, '\\') >= 0 }

// nextMember reads what follows an object member at b[i]: for a ',' it
// returns the start of the next key; for the closing '}' minus the index
// past it.
func nextMember(b []byte, i int) (int, *scanError) {
	i = skipWS(b, i)
	if i >= len(b) {
		return 0, unexpected(b, i, "after object member")
	}
	switch b[i] {
	case ',':
		return skipWS(b, i+1), nil
	case '}':
		return -(i + 1), nil
	}
	return 0, unexpected(b, i, "after object member")
}

// skipRest validates the remaining elements of an array whose first element
// has been read, starting at the next element at b[i], and returns the index
// past its ']'.
func skipRest(b []byte, i, depth int) (int, *scanError) {
	for {
		var err *scanError
		if i, err = skipValue(b, i, depth); err != nil {
			return 0, err
		}
		if i, err = nextElement(b, i); err != nil || i < 0 {
			return -i, err
		}
	}
}

// walkAnnotations reads the annotations object at b[i] and parses the
// apiserver.latency.k8s.io/* values into ev.latency. Other annotations
// (authorization decisions, mostly) are passed over with one prefix check.
func walkAnnotations(b []byte, i, depth int, ev *rawEvent) (int, *scanError) {
	i, done, err := openContainer(b, i, depth, '}')
	if done || err != nil {
		return i, err
	}
	for {
		var key []byte
		if key, i, err = memberKey(b, i); err != nil {
			return 0, err
		}
		switch {
		case b[i] != '"':
			if i, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
		case bytes.HasPrefix(key, latencyPrefix):
			if i, err = latencyMember(b, i, key, false, ev); err != nil {
				return 0, err
			}
		case hasBackslash(key):
			if i, err = latencyMember(b, i, key, true, ev); err != nil {
				return 0, err
			}
		default:
			if i, err = skipString(b, i+1); err != nil {
				return 0, err
			}
		}
		if i, err = nextMember(b, i); err != nil || i < 0 {
			return -i, err
		}
	}
}

// latencyMember reads the string value at b[i] of annotation key and, when
// it is a latency phase herd knows (first occurrence), parses it.
func latencyMember(b []byte, i int, key []byte, esc bool, ev *rawEvent) (int, *scanError) {
	var v rawStr
	end, err := scanStringField(b, i, &v)
	if err != nil {
		return 0, err
	}
	var kb [64]byte
	k := keyName64(key, esc, &kb)
	if !bytes.HasPrefix(k, latencyPrefix) {
		return end, nil
	}
	p := latencyPhase(k[len(latencyPrefix):])
	if p < NumLatencyPhases && ev.latency[p] == 0 {
		val := v.b
		var vb [64]byte
		if v.esc {
			if len(v.b) > len(vb) {
				return end, nil
			}
			val = unescapeJSON(vb[:0], v.b)
		}
		ev.latency[p] = parseDuration(val)
	}
	return end, nil
}

// latencyPhase maps an annotation key's suffix to its phase;
// NumLatencyPhases when herd does not know it.
func latencyPhase(suffix []byte) LatencyPhase {
	for p, name := range latencyPhaseNames {
		if string(suffix) == name {
			return LatencyPhase(p)
		}
	}
	return NumLatencyPhases
}

// keyName64 is keyName for keys of up to 64 unescaped bytes (longer ones
// still work, through an allocation).
func keyName64(key []byte, esc bool, buf *[64]byte) []byte {
	if !esc {
		return key
	}
	return unescapeJSON(buf[:0], key)
}

// parseDuration parses a Go time.Duration.String() value ("1.5s",
// "2m3.004s", "850µs", "1h0m0s"; the units of time.ParseDuration) into
// nanoseconds. Anything else, a negative value, or an overflow is 0: the
// phase is then unknown rather than guessed.
func parseDuration(b []byte) int64 {
	if len(b) == 0 || len(b) > 40 {
		return 0
	}
	var total float64
	i := 0
	for i < len(b) {
		start := i
		var v float64
		for i < len(b) && isDigit(b[i]) {
			v = v*10 + float64(b[i]-'0')
			i++
		}
		if i < len(b) && b[i] == '.' {
			i++
			scale := 0.1
			for i < len(b) && isDigit(b[i]) {
				v += float64(b[i]-'0') * scale
				scale /= 10
				i++
			}
		}
		if i == start {
			return 0
		}
		u := i
		for i < len(b) && !isDigit(b[i]) && b[i] != '.' {
			i++
		}
		var unit float64
		switch string(b[u:i]) {
		case "ns":
			unit = 1
		case "us", "\u00b5s", "\u03bcs": // µs: U+00B5 (Go's), U+03BC
			unit = 1e3
		case "ms":
			unit = 1e6
		case "s":
			unit = 1e9
		case "m":
			unit = 60e9
		case "h":
			unit = 3600e9
		default:
			return 0
		}
		total += v * unit
	}
	if total >= 1<<62 {
		return 0
	}
	return int64(total + 0.5)
}

// where an event candidate came from, for problem reports.
type where uint8

const (
	whereObject  where = iota // the top-level object itself is the event
	whereArray                // an element of a top-level array
	whereItems                // an element of an EventList's items
	whereRecords              // an entry of an Azure records wrapper
	whereNamed                // inside an envelope: loc.name says where
)

func (w where) describe(idx int) string {
	switch w {
	case whereArray:
		return "[" + itoa(idx) + "]"
	case whereItems:
		return "items[" + itoa(idx) + "]"
	case whereRecords:
		return "records[" + itoa(idx) + "]"
	}
	return "event"
}

// loc is where an event candidate is, for problem reports: its offset in b
// (the slice being decoded), and which entry it is.
type loc struct {
	b    []byte
	off  int
	w    where
	idx  int
	name string // for whereNamed
}

func (l loc) describe() string {
	if l.w == whereNamed {
		return l.name
	}
	return l.w.describe(l.idx)
}

// str returns the contents of a string field, unescaping into d.scratch
// only when it holds escapes (requestURI usually does: the apiserver writes
// '&' as \u0026).
func (d *Decoder) str(r *rawStr) []byte {
	if !r.set {
		return nil
	}
	if !r.esc {
		return r.b
	}
	start := len(d.scratch)
	d.scratch = unescapeJSON(d.scratch, r.b)
	return d.scratch[start:len(d.scratch):len(d.scratch)]
}

var (
	tooLargeRV    = []byte("Too large resource version")
	auditAPIGroup = []byte("audit.k8s.io/")
)

// finish turns a walked event into d.ev and delivers it, or counts why not.
func (d *Decoder) finish(raw *rawEvent, size int, at loc, fn func(*Event)) {
	if size > d.maxEventBytes() {
		d.skip(at, ErrOversized, "", size)
		return
	}
	d.scratch = d.scratch[:0]
	ev := &d.ev
	*ev = Event{}
	if raw.seen&fKind != 0 && string(d.str(&raw.kind)) != "Event" {
		d.skip(at, ErrMalformed, "kind is not Event", 0)
		return
	}
	if raw.seen&fAPIVersion != 0 && !bytes.HasPrefix(d.str(&raw.apiVersion), auditAPIGroup) {
		d.skip(at, ErrMalformed, "apiVersion is not audit.k8s.io", 0)
		return
	}
	if ev.AuditID = d.str(&raw.auditID); len(ev.AuditID) == 0 {
		d.skip(at, ErrMalformed, "missing auditID", 0)
		return
	}
	stage := d.str(&raw.stage)
	if len(stage) == 0 {
		d.skip(at, ErrMalformed, "missing stage", 0)
		return
	}
	if ev.Verb = d.str(&raw.verb); len(ev.Verb) == 0 {
		d.skip(at, ErrMalformed, "missing verb", 0)
		return
	}
	switch string(stage) {
	case "RequestReceived":
		ev.Stage = StageRequestReceived
	case "ResponseStarted":
		ev.Stage = StageResponseStarted
	case "ResponseComplete":
		ev.Stage = StageResponseComplete
	case "Panic":
		ev.Stage = StagePanic
	}
	ev.User = d.str(&raw.username)
	ev.Unauthenticated = len(ev.User) == 0 || raw.unauthGroup || string(ev.User) == "system:anonymous"
	ev.NodeNameExtra = d.str(&raw.nodeName)
	ev.UserAgent = d.str(&raw.userAgent)
	ev.SourceIP = d.str(&raw.sourceIP)
	if n := raw.nSource; n > 0 {
		k := min(n, MaxSourceIPTail)
		for j := 0; j < k; j++ {
			ev.SourceIPTail[j] = d.str(&raw.sourceTail[(n-k+j)%MaxSourceIPTail])
		}
		ev.NumSourceIPTail = k
	}
	if raw.seen&fAnnotations != 0 && raw.latency != ([NumLatencyPhases]int64{}) {
		ev.Latency = raw.latency
	}
	ev.RequestReceived = d.str(&raw.reqTS)
	ev.Resource = d.str(&raw.resource)
	ev.Subresource = d.str(&raw.subresource)
	ev.APIGroup = d.str(&raw.apiGroup)
	ev.Namespace = d.str(&raw.namespace)
	ev.Name = d.str(&raw.name)
	ev.Code = raw.code
	if raw.message.set {
		ev.TooLargeResourceVersion = bytes.Contains(d.str(&raw.message), tooLargeRV)
	}
	// Old audit.k8s.io/v1beta1 events (Kubernetes ≤ 1.8) carry "timestamp"
	// instead of stageTimestamp.
	if ev.StageTimestampNanos = d.timestamp(d.str(&raw.stageTS)); ev.StageTimestampNanos == 0 && raw.legacyTS.set {
		ev.StageTimestampNanos = d.timestamp(d.str(&raw.legacyTS))
	}
	if raw.uri.set {
		parseQuery(&ev.Query, d.str(&raw.uri), ev.Resource, &d.scratch)
	}
	ev.Query.Unknown = d.queryLost
	d.r.Events++
	fn(ev)
}

// unescapeJSON appends the JSON string contents s, unescaped, to dst. It is
// lenient the way fastjson is, since the scanner lets any string contents
// through: an escape it cannot decode (unknown letter, bad \u digits, a lone
// surrogate) is kept as written rather than failing the event. The runs
// between escapes are copied whole (a requestURI is ~150 bytes with a few
// \u0026 in it).
func unescapeJSON(dst, s []byte) []byte {
	for {
		j := bytes.IndexByte(s, '\\')
		if j < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:j]...)
		s = s[j:] // s[0] is the backslash
		if len(s) < 2 {
			return append(dst, '\\')
		}
		switch e := s[1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s[2:])
			if !ok {
				dst = append(dst, '\\', 'u')
				break
			}
			if !utf16.IsSurrogate(r) {
				dst = utf8.AppendRune(dst, r)
				s = s[6:]
				continue
			}
			// A surrogate needs its pair right after it.
			if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
				if r2, ok := hex4(s[8:]); ok {
					dst = utf8.AppendRune(dst, utf16.DecodeRune(r, r2))
					s = s[12:]
					continue
				}
			}
			dst = append(dst, '\\', 'u')
			dst = append(dst, s[2:6]...)
			s = s[6:]
			continue
		default:
			dst = append(dst, '\\', e)
		}
		s = s[2:]
	}
}

// hex4 decodes four hex digits at the start of s.
func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		h, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}
