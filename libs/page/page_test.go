package page_test

import (
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/page"
)

func TestSliceWalksEveryItemOnce(t *testing.T) {
	items := []string{"a", "b", "c", "d", "e"}
	id := func(s string) string { return s }
	for _, c := range []struct {
		name string
		cmp  func(a, b string) int
		in   []string
	}{
		{"ascending", strings.Compare, items},
		{"descending", func(a, b string) int { return strings.Compare(b, a) }, []string{"e", "d", "c", "b", "a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			req := page.Request{Limit: 2}
			for pages := 0; ; pages++ {
				p, next, err := page.Slice(c.in, req, id, c.cmp)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p...)
				if next == "" {
					if pages != 2 {
						t.Fatalf("%d pages, want 3", pages+1)
					}
					break
				}
				req.Cursor = next
			}
			if strings.Join(got, "") != strings.Join(c.in, "") {
				t.Fatalf("walked %v", got)
			}
		})
	}
	// An item removed between pages does not make the walk skip or repeat.
	p1, next, _ := page.Slice(items, page.Request{Limit: 2}, id, strings.Compare)
	p2, _, _ := page.Slice([]string{"a", "c", "d", "e"}, page.Request{Limit: 2, Cursor: next}, id, strings.Compare)
	if strings.Join(p1, "")+strings.Join(p2, "") != "abcd" {
		t.Fatalf("after a removal: %v %v", p1, p2)
	}
	// Exactly one full page has no next cursor; an empty list is an empty page.
	if _, next, _ := page.Slice(items, page.Request{Limit: 5}, id, strings.Compare); next != "" {
		t.Fatalf("next cursor after the last item: %q", next)
	}
	if p, next, _ := page.Slice([]string(nil), page.Request{}, id, strings.Compare); p == nil || len(p) != 0 || next != "" {
		t.Fatalf("empty: %#v %q", p, next)
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	id := func(s string) string { return s }
	for _, r := range []page.Request{{Limit: -1}, {Limit: page.MaxLimit + 1}, {Cursor: "!!not base64"}} {
		if _, _, err := page.Slice([]string{"a"}, r, id, strings.Compare); err == nil || !strings.Contains(err.Error(), "400") {
			t.Fatalf("%+v: %v", r, err)
		}
	}
	for _, c := range []string{"!!", page.Encode("nope")} {
		if _, err := page.DecodeSeq(c); err == nil {
			t.Fatalf("DecodeSeq(%q) accepted", c)
		}
	}
	if s, err := page.DecodeSeq(page.EncodeSeq(42)); err != nil || s != 42 {
		t.Fatalf("round trip: %d %v", s, err)
	}
	if s, err := page.DecodeSeq(""); err != nil || s != 1 {
		t.Fatalf("first page: %d %v", s, err)
	}
}
