// Package page is the cursor pagination of Outpost's list endpoints: a request carries
// `cursor` (the `next_cursor` of the previous page, opaque) and `limit`; an answer carries
// `next_cursor` when more follows. Lists are in a stable order of a unique key, and a cursor
// is the key of the last item returned, so a page never repeats or skips an item that
// existed on both requests, whatever was added or removed in between.
package page

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"

	"github.com/outpost-dev/outpost/libs/bus"
)

// Sizes of a page of the hub's registries (agents, sites, credentials, runs, schedules,
// tokens, audit, DLQ). The CMDB keeps its own (50, at most 500): its pages are heavier.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Request is the paging part of a list request.
type Request struct {
	Cursor string `json:"cursor,omitempty"` // next_cursor of the previous page
	Limit  int    `json:"limit,omitempty"`  // default 100, at most 1000
}

// Size checks the limit: 0 is the default; out of range is refused rather than cut, so a
// client never takes a short page for the end.
func (r Request) Size() (int, error) {
	switch {
	case r.Limit == 0:
		return DefaultLimit, nil
	case r.Limit < 0 || r.Limit > MaxLimit:
		return 0, bus.Errorf(http.StatusBadRequest, "limit %d: want 1 to %d (default %d); page with next_cursor", r.Limit, MaxLimit, DefaultLimit)
	}
	return r.Limit, nil
}

// Encode makes the cursor of a key.
func Encode(key string) string { return base64.RawURLEncoding.EncodeToString([]byte(key)) }

// Decode reads a cursor back into its key; "" is the first page.
func Decode(cursor string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", bus.Errorf(http.StatusBadRequest, "cursor %q is not one this API made: pass next_cursor of the previous page unchanged", cursor)
	}
	return string(b), nil
}

// Slice returns the page of items after the request's cursor and the cursor of the next
// page ("" at the end). items must be sorted by cmp over their keys (strings.Compare for
// ascending, its negation for newest-first ULIDs), keys unique.
func Slice[T any](items []T, r Request, key func(T) string, cmp func(a, b string) int) ([]T, string, error) {
	n, err := r.Size()
	if err != nil {
		return nil, "", err
	}
	start := 0
	if r.Cursor != "" {
		after, err := Decode(r.Cursor)
		if err != nil {
			return nil, "", err
		}
		start = sort.Search(len(items), func(i int) bool { return cmp(key(items[i]), after) > 0 })
	}
	end := min(len(items), start+n)
	out := items[start:end:end]
	if out == nil {
		out = []T{}
	}
	next := ""
	if end < len(items) && end > start {
		next = Encode(key(items[end-1]))
	}
	return out, next, nil
}

// EncodeSeq makes the cursor of a stream position: the next sequence to read.
func EncodeSeq(seq uint64) string { return Encode(fmt.Sprintf("seq:%d", seq)) }

// DecodeSeq reads a sequence cursor; "" is 1, the start of the stream.
func DecodeSeq(cursor string) (uint64, error) {
	if cursor == "" {
		return 1, nil
	}
	k, err := Decode(cursor)
	if err != nil {
		return 0, err
	}
	var seq uint64
	if _, err := fmt.Sscanf(k, "seq:%d", &seq); err != nil || seq == 0 {
		return 0, bus.Errorf(http.StatusBadRequest, "cursor %q is not one this API made: pass next_cursor of the previous page unchanged", cursor)
	}
	return seq, nil
}
