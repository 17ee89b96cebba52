package store

import (
	"maps"
	"testing"
	"time"
)

// A CI's attributes and their sources survive the columns they are stored in, whatever
// characters names and sources hold, and the same state always encodes the same.
func TestEncodeAttrsRoundTrip(t *testing.T) {
	t1 := time.Date(2026, 12, 6, 10, 0, 0, 123, time.UTC)
	t2 := t1.Add(time.Hour)
	cases := map[string]map[string]AttrRow{
		"none": {},
		"one source": {
			"name": {Value: `"web-1"`, Source: "discovery", Observed: t1},
			"ram":  {Value: `4096`, Source: "discovery", Observed: t1},
		},
		"sources and times interleaved": {
			"a": {Value: `"x"`, Source: "discovery", Observed: t1},
			"b": {Value: `true`, Source: "sccm", Observed: t1},
			"c": {Value: `null`, Source: "discovery", Observed: t2},
			"d": {Value: `["l"]`, Source: "discovery", Observed: t1},
			"e": {Value: `{"k":1}`, Source: "manual", Observed: time.Time{}},
		},
		"names and sources JSON must escape": {
			`quote"d`:    {Value: `1`, Source: `src "q"`, Observed: t1},
			`back\slash`: {Value: `2`, Source: `a<b>&c`, Observed: t1},
			"tab\tname":  {Value: `3`, Source: "ünï", Observed: t2},
		},
	}
	for name, attrs := range cases {
		t.Run(name, func(t *testing.T) {
			for a, r := range attrs {
				r.CIID, r.Attr = "ci1", a
				attrs[a] = r
			}
			v, s := encodeAttrs(attrs)
			if v2, s2 := encodeAttrs(maps.Clone(attrs)); v2 != v || s2 != s {
				t.Fatalf("encodings differ: %s %s / %s %s", v, s, v2, s2)
			}
			got, err := decodeAttrs("ci1", v, s)
			if err != nil {
				t.Fatalf("decode %s %s: %v", v, s, err)
			}
			if len(got) != len(attrs) {
				t.Fatalf("decoded %d attributes, want %d: %v", len(got), len(attrs), got)
			}
			for a, want := range attrs {
				g := got[a]
				if g.Value != want.Value || g.Source != want.Source || !g.Observed.Equal(want.Observed) || g.CIID != "ci1" || g.Attr != a {
					t.Errorf("%q: got %+v, want %+v (columns %s %s)", a, g, want, v, s)
				}
			}
		})
	}
}
