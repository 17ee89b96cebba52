package metrics

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// readResultHead reads what the observer counts of a result. Every result on the bus passes
// through it, so the common case — the bridges' encoder output — is read by scanning the
// top-level object for the few members needed, without decoding the rest (json.Unmarshal was
// ~80 % of the observer's cost per result: validating and decoding every member, the data
// included). Anything unusual (an escape in a string it reads, a member name differing only
// in case, a time it cannot parse, a syntax error where it looks) goes to json.Unmarshal,
// which decides as before. Values of members it skips are not validated: a result malformed
// there is counted here, and dead-lettered by the services that decode it.
func readResultHead(data []byte) (resultHead, error) {
	if r, ok := scanResultHead(data); ok {
		return r, nil
	}
	var r resultHead
	err := json.Unmarshal(data, &r)
	return r, err
}

// scanResultHead is readResultHead's fast path; ok=false sends the caller to json.Unmarshal.
func scanResultHead(b []byte) (r resultHead, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return r, false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return r, skipSpace(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return r, false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return r, false
		}
		i = skipSpace(b, i+1)
		end, ok := skipValue(b, i)
		if !ok {
			return r, false
		}
		val := b[i:end]
		switch string(key) {
		case "kind", "status":
			s, n, ok := plainString(val, 0)
			if !ok || n != len(val) {
				return r, false
			}
			if string(key) == "kind" {
				r.Kind = string(s)
			} else {
				r.Status = string(s)
			}
		case "final":
			switch string(val) {
			case "true":
				r.Final = true
			case "false":
				r.Final = false
			default:
				return r, false
			}
		case "started", "finished":
			s, n, ok := plainString(val, 0)
			if !ok || n != len(val) {
				return r, false
			}
			t, err := time.Parse(time.RFC3339Nano, string(s))
			if err != nil {
				return r, false
			}
			if string(key) == "started" {
				r.Started = t
			} else {
				r.Finished = t
			}
		case "data":
			r.Data = json.RawMessage(val)
		default:
			// json.Unmarshal matches member names without regard to case.
			for _, name := range [...]string{"kind", "status", "final", "started", "finished", "data"} {
				if strings.EqualFold(string(key), name) {
					return r, false
				}
			}
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return r, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return r, skipSpace(b, i+1) == len(b)
		default:
			return r, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the string starting at b[i] (its opening quote) when it has no escape:
// its content and the index after its closing quote.
func plainString(b []byte, i int) (s []byte, end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	j := bytes.IndexByte(b[i+1:], '"')
	if j < 0 {
		return nil, 0, false
	}
	s = b[i+1 : i+1+j]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, 0, false
	}
	return s, i + 2 + j, true
}

// skipValue returns the index after the JSON value starting at b[i]: a string (escapes
// followed), an object or array (nesting counted, strings inside skipped whole), or a
// literal (up to the next delimiter).
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				end, ok := skipString(b, i)
				if !ok {
					return 0, false
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, true
				}
			}
			i++
		}
		return 0, false
	default:
		start := i
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
			i++
		}
		return i, i > start
	}
}

func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}
