// Package capture keeps the output of a target within a limit without hiding that it did:
// a Buffer stores the first N bytes and counts the rest, a Blob says whether it was cut
// and how large the original was.
package capture

import (
	"encoding/base64"
	"unicode/utf8"

	"github.com/outpost-dev/outpost/libs/probes"
)

// Blob is captured output (the wire type is the contract's).
type Blob = probes.Blob

// Buffer is an io.Writer that keeps the first Limit bytes and counts all of them.
// The zero value keeps nothing.
type Buffer struct {
	Limit int
	buf   []byte
	n     int64
}

// NewBuffer keeps up to limit bytes.
func NewBuffer(limit int) *Buffer { return &Buffer{Limit: limit} }

// Write never fails: beyond the limit bytes are only counted.
func (b *Buffer) Write(p []byte) (int, error) {
	b.n += int64(len(p))
	if room := b.Limit - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// Len is how many bytes were written in all.
func (b *Buffer) Len() int64 { return b.n }

// Bytes are the kept bytes.
func (b *Buffer) Bytes() []byte { return b.buf }

// Truncated reports whether more was written than kept.
func (b *Buffer) Truncated() bool { return b.n > int64(len(b.buf)) }

// Blob summarises the buffer; atLeast says the writer had not finished.
func (b *Buffer) Blob(atLeast bool) Blob {
	return Make(b.buf, b.n, atLeast)
}

// Make builds a Blob of kept bytes out of size bytes in all.
func Make(kept []byte, size int64, atLeast bool) Blob {
	bl := Blob{Size: size, Truncated: size > int64(len(kept)), SizeAtLeast: atLeast}
	text := kept
	if bl.Truncated {
		// a cut may split the last rune: that alone does not make the output binary
		text = TrimPartialRune(text)
	}
	if Textual(text) {
		bl.Text = string(text)
	} else {
		bl.Base64 = base64.StdEncoding.EncodeToString(kept)
	}
	return bl
}

// TrimPartialRune drops an incomplete UTF-8 sequence at the end of b.
func TrimPartialRune(b []byte) []byte {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < utf8.RuneSelf {
			return b // ASCII: nothing partial after it
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return b[:len(b)-i]
			}
			return b
		}
	}
	return b
}

// Limit returns the output cap for one chunk: set (Settings.MaxOutput) or 512 KiB.
func Limit(set int) int {
	if set <= 0 {
		return 512 << 10
	}
	return set
}

// Textual reports whether b is best shown as text: valid UTF-8 whose JSON form is at most
// twice as long (HTML's < and > count 6 bytes each once escaped; a run of control bytes is
// binary). Callers size their caps so that twice the kept bytes fit in a chunk.
func Textual(b []byte) bool {
	return utf8.Valid(b) && JSONLen(b) <= 2*len(b)
}

// JSONLen is the length of b as a JSON string's content, as encoding/json writes it
// (control characters, <, >, & and U+2028/U+2029 as \uXXXX; quote and backslash escaped).
func JSONLen(b []byte) int {
	n := 0
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
