package ldapsearch

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValue(t *testing.T) {
	guid := []byte{0xe0, 0x04, 0x25, 0x3f, 0x89, 0x4f, 0xd3, 0x11, 0x9a, 0x0c, 0x03, 0x05, 0xe8, 0x2c, 0x33, 0x01}
	sid := []byte{1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0, 0x15, 0xcd, 0x5b, 0x07, 0x8a, 0x0a, 0x0f, 0x21, 0x55, 0x94, 0x59, 0x53, 0xf4, 0x01, 0, 0}
	cases := []struct {
		attr      string
		raw       []byte
		want      string
		bin, trun bool
	}{
		{"cn", []byte("Ada Lovelace"), "Ada Lovelace", false, false},
		{"objectGUID", guid, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", false, false},
		{"objectSid", sid, "S-1-5-21-123456789-554633866-1398379605-500", false, false},
		{"objectSid", []byte{1, 9, 0}, base64.StdEncoding.EncodeToString([]byte{1, 9, 0}), true, false},
		{"jpegPhoto", []byte("JFIF"), base64.StdEncoding.EncodeToString([]byte("JFIF")), true, false},
		{"description", []byte{0xff, 0xfe}, "//4=", true, false},
		{"description", []byte(strings.Repeat("é", MaxValue)), strings.Repeat("é", MaxValue/2), false, true},
	}
	for _, c := range cases {
		s, bin, cut := Value(c.attr, c.raw)
		if s != c.want || bin != c.bin || cut != c.trun {
			t.Errorf("Value(%s, %x…) = %.60q %v %v, want %.60q %v %v", c.attr, c.raw[:min(8, len(c.raw))], s, bin, cut, c.want, c.bin, c.trun)
		}
	}
}

// FuzzValue: any attribute value renders as bounded, valid UTF-8 (text, GUID, SID or
// base64 that decodes back to a prefix of the value).
func FuzzValue(f *testing.F) {
	f.Add("objectSid", []byte{1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0})
	f.Fuzz(func(t *testing.T, attr string, raw []byte) {
		s, bin, cut := Value(attr, raw)
		if !utf8.ValidString(s) || len(s) > MaxValue*4/3+4 {
			t.Fatalf("Value(%q, %q) = %q", attr, raw, s)
		}
		if bin {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil || !strings.HasPrefix(string(raw), string(b)) || (cut != (len(b) < len(raw))) {
				t.Fatalf("base64 %q is not the value", s)
			}
		}
	})
}
