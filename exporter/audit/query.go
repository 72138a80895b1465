package audit

import "bytes"

// parseQuery fills q from the query string of requestURI. Values alias uri
// unless they need %-decoding; then they are decoded into *scratch, which the
// caller reuses across events, so the common case (nothing escaped) allocates
// nothing and the escaped case allocates only while scratch grows.
//
// Semantics follow net/url.ParseQuery as the apiserver applies it: pairs are
// split on '&', '+' means space, the first occurrence of a parameter wins, and
// a pair whose escaping is broken or that holds a ';' is ignored, as it was
// by the apiserver. resource is the event's objectRef.resource: a
// metadata.name field selector names a node only on nodes.
func parseQuery(q *Query, uri []byte, resource []byte, scratch *[]byte) {
	*q = Query{}
	qm := bytes.IndexByte(uri, '?')
	if qm < 0 {
		return
	}
	rest := uri[qm+1:]
	if h := bytes.IndexByte(rest, '#'); h >= 0 {
		rest = rest[:h]
	}
	var seen uint8
	const (
		seenRV = 1 << iota
		seenRVM
		seenContinue
		seenSIE
		seenLimit
		seenFS
		seenLS
	)
	var fieldSelector []byte
	for len(rest) > 0 {
		var pair []byte
		if amp := bytes.IndexByte(rest, '&'); amp >= 0 {
			pair, rest = rest[:amp], rest[amp+1:]
		} else {
			pair, rest = rest, nil
		}
		if len(pair) == 0 || bytes.IndexByte(pair, ';') >= 0 {
			continue // net/url drops pairs with ';', and so did the apiserver
		}
		key, val := pair, []byte(nil)
		if eq := bytes.IndexByte(pair, '='); eq >= 0 {
			key, val = pair[:eq], pair[eq+1:]
		}
		var keyBuf [24]byte
		if needsUnescape(key) {
			k, ok := unescapeQuery(keyBuf[:0], key)
			if !ok {
				continue
			}
			key = k
		}
		var bit uint8
		switch string(key) {
		case "resourceVersion":
			bit = seenRV
		case "resourceVersionMatch":
			bit = seenRVM
		case "continue":
			bit = seenContinue
		case "sendInitialEvents":
			bit = seenSIE
		case "limit":
			bit = seenLimit
		case "fieldSelector":
			bit = seenFS
		case "labelSelector":
			bit = seenLS
		default:
			continue
		}
		if seen&bit != 0 {
			continue
		}
		if bit == seenLS {
			// Only whether a label selector was sent matters: validate its
			// escapes (a pair with broken ones is dropped, as net/url
			// drops it) without decoding them.
			if validEscapes(val) {
				seen |= bit
				q.LabelSelector = len(val) > 0
			}
			continue
		}
		if needsUnescape(val) {
			start := len(*scratch)
			s, ok := unescapeQuery(*scratch, val)
			if !ok {
				continue
			}
			*scratch = s
			val = s[start:len(s):len(s)]
		}
		seen |= bit
		switch bit {
		case seenRV:
			q.ResourceVersion = val
		case seenRVM:
			q.ResourceVersionMatch = val
		case seenContinue:
			q.Continue = len(val) > 0
		case seenSIE:
			q.SendInitialEvents = parseBool(val)
		case seenLimit:
			q.Limit = parseLimit(val)
		case seenFS:
			fieldSelector = val
		}
	}
	if len(fieldSelector) > 0 {
		parseFieldSelector(q, fieldSelector, bytes.Equal(resource, []byte("nodes")), scratch)
	}
}

// validEscapes reports whether every '%' in b starts a valid %XX escape.
func validEscapes(b []byte) bool {
	for {
		i := bytes.IndexByte(b, '%')
		if i < 0 {
			return true
		}
		if i+2 >= len(b) {
			return false
		}
		if _, ok := unhex(b[i+1]); !ok {
			return false
		}
		if _, ok := unhex(b[i+2]); !ok {
			return false
		}
		b = b[i+3:]
	}
}

func needsUnescape(b []byte) bool {
	return bytes.IndexByte(b, '%') >= 0 || bytes.IndexByte(b, '+') >= 0
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapeQuery appends the query-unescaped s to dst. It reports false for a
// malformed %-escape, as url.QueryUnescape would.
func unescapeQuery(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '%':
			if i+2 >= len(s) {
				return dst, false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return dst, false
			}
			dst = append(dst, hi<<4|lo)
			i += 2
		case '+':
			dst = append(dst, ' ')
		default:
			dst = append(dst, c)
		}
	}
	return dst, true
}

// parseBool accepts what strconv.ParseBool accepts as true; the apiserver
// converts sendInitialEvents with it.
func parseBool(b []byte) bool {
	switch string(b) {
	case "1", "t", "T", "true", "TRUE", "True":
		return true
	}
	return false
}

// parseLimit parses a non-negative decimal page size; anything else is 0
// (the apiserver treats a missing or zero limit as "no paging").
func parseLimit(b []byte) int64 {
	n, _ := decimal(b, 18)
	return n
}

// parseFieldSelector fills q's field-selector facts from sel: the node of a
// spec.nodeName term (= or ==), or, when nodes is true, of a metadata.name
// term; the object name of a metadata.name term on any other resource; and
// whether any other term is present. spec.nodeName wins over metadata.name
// on nodes, and the first term of each field wins. Terms are comma-separated
// and a backslash escapes the next character (the fields.EscapeValue
// convention, k8s.io/apimachinery@v0.36.3 pkg/fields/selector.go); an
// escaped value is unescaped into scratch.
func parseFieldSelector(q *Query, sel []byte, nodes bool, scratch *[]byte) {
	var specNode, name []byte
	for len(sel) > 0 {
		// Find the end of the term, honouring backslash escapes.
		end, escaped := len(sel), false
		for i := 0; i < len(sel); i++ {
			if sel[i] == '\\' {
				escaped = true
				i++
				continue
			}
			if sel[i] == ',' {
				end = i
				break
			}
		}
		term := sel[:end]
		if end < len(sel) {
			sel = sel[end+1:]
		} else {
			sel = nil
		}
		switch string(term) {
		case "", "=", "==", "!=":
			continue // no field and no value selects everything (fields.hasTerm.Transform)
		}
		var field, val []byte
		switch {
		case bytes.HasPrefix(term, []byte("spec.nodeName")):
			field, val = term[:len("spec.nodeName")], term[len("spec.nodeName"):]
		case bytes.HasPrefix(term, []byte("metadata.name")):
			field, val = term[:len("metadata.name")], term[len("metadata.name"):]
		default:
			q.OtherFieldSelector = true
			continue
		}
		switch {
		case bytes.HasPrefix(val, []byte("==")):
			val = val[2:]
		case bytes.HasPrefix(val, []byte("=")):
			val = val[1:]
		default:
			q.OtherFieldSelector = true // != or a longer field name such as spec.nodeNameX
			continue
		}
		if escaped && bytes.IndexByte(val, '\\') >= 0 {
			start := len(*scratch)
			s := *scratch
			for i := 0; i < len(val); i++ {
				if val[i] == '\\' && i+1 < len(val) {
					i++
				}
				s = append(s, val[i])
			}
			*scratch = s
			val = s[start:len(s):len(s)]
		}
		if len(val) == 0 {
			q.OtherFieldSelector = true // spec.nodeName= selects the unscheduled: no index serves it
			continue
		}
		switch {
		case field[0] == 's':
			if specNode == nil {
				specNode = val
			}
		case name == nil:
			name = val
		}
	}
	q.FieldSelectorNode = specNode
	switch {
	case !nodes:
		q.FieldSelectorName = name
	case specNode == nil:
		q.FieldSelectorNode = name
	}
}
