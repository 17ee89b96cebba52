// Package envelope holds the versioned message contract of the bus: the bodies of DESIGN.md §2
// and their CloudEvents binary-mode attributes carried as NATS headers.
//
// Every message has a ce-id (a ULID) that is also its Nats-Msg-Id, so a publish retried after a
// lost ack is deduplicated by JetStream, and consumers can be idempotent on one key.
package envelope

import (
	"crypto/rand"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"
)

// CloudEvents binary-mode headers and our own extensions. NATS headers are case-sensitive:
// these exact spellings are the wire format.
const (
	HeaderSpecVersion = "ce-specversion"
	HeaderID          = "ce-id"
	HeaderType        = "ce-type"
	HeaderSource      = "ce-source"
	HeaderTime        = "ce-time"
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	HeaderRun         = "outpost-run"
	HeaderMsgID       = nats.MsgIdHdr // "Nats-Msg-Id"

	SpecVersion = "1.0"
)

// Types of the bodies this version knows. The suffix is the schema version.
const (
	TypeProbe      = "outpost.probe.v1"
	TypeResult     = "outpost.result.v1"
	TypeEvent      = "outpost.event.v1"
	TypeEvents     = "outpost.events.v1"
	TypeCI         = "outpost.ci.v1"
	TypeHeartbeat  = "outpost.heartbeat.v1"
	TypeEnrollment = "outpost.enrollment.v1"
	TypeChange     = "outpost.change.v1"
	TypeAudit      = "outpost.audit.v1"
	TypeIngested   = "outpost.ingested.v1"
	TypeSample     = "outpost.metric.v1"
)

// Meta is the CloudEvents context of one message.
type Meta struct {
	ID     string
	Type   string
	Source string
	Time   time.Time
	Run    string
}

// NewMeta returns a Meta with a fresh ULID and the current time.
func NewMeta(typ, source string) Meta {
	return Meta{ID: NewID(), Type: typ, Source: source, Time: time.Now().UTC()}
}

// Headers writes the meta as CloudEvents binary-mode headers (plus Nats-Msg-Id = ce-id)
// into h, allocating it when nil.
func (m Meta) Headers(h nats.Header) nats.Header {
	if h == nil {
		h = make(nats.Header, 8)
	}
	// One backing array for the values instead of one per header (a message's headers are
	// written for every change event the CMDB publishes); capped slices, so appending a
	// second value to one header copies it and never overwrites its neighbour's.
	vals := make([]string, 0, 7)
	set := func(k, v string) { // direct assignment keeps the exact case
		vals = append(vals, v)
		n := len(vals)
		h[k] = vals[n-1 : n : n]
	}
	set(HeaderSpecVersion, SpecVersion)
	set(HeaderID, m.ID)
	set(HeaderMsgID, m.ID)
	set(HeaderType, m.Type)
	set(HeaderSource, m.Source)
	set(HeaderTime, m.Time.UTC().Format(time.RFC3339Nano))
	if m.Run != "" {
		set(HeaderRun, m.Run)
	}
	return h
}

var (
	entropyMu sync.Mutex
	entropy   = ulid.Monotonic(rand.Reader, 0)
)

// NewID returns a new ULID string: sortable by time, unique across processes.
func NewID() string {
	entropyMu.Lock()
	defer entropyMu.Unlock()
	return ulid.MustNew(ulid.Now(), entropy).String()
}

// Source names, as in DESIGN.md §2.
func ServiceSource(service string) string { return "/services/" + service }

// AgentSource is the ce-source of a bridge.
func AgentSource(site, agent string) string { return "/sites/" + site + "/agents/" + agent }

// baseType splits "outpost.probe.v1" into "outpost.probe" and "v1".
func baseType(t string) (base, version string, ok bool) {
	i := strings.LastIndexByte(t, '.')
	if i <= 0 || i == len(t)-1 || t[i+1] != 'v' {
		return "", "", false
	}
	return t[:i], t[i+1:], true
}

// readMeta reads and checks the CloudEvents headers of a message through get, which returns
// the first value of a header or "" (a nats.Header, or a consumer's metadata map).
func readMeta(get func(string) string) (Meta, error) {
	if sv := get(HeaderSpecVersion); sv != "" && sv != SpecVersion {
		return Meta{}, &VersionError{Type: "ce-specversion " + sv, Known: SpecVersion}
	}
	m := Meta{ID: get(HeaderID), Type: get(HeaderType), Source: get(HeaderSource), Run: get(HeaderRun)}
	switch {
	case m.Type == "":
		return m, &MissingFieldError{Field: HeaderType, In: "headers"}
	case m.ID == "":
		return m, &MissingFieldError{Field: HeaderID, In: "headers"}
	case m.Source == "":
		return m, &MissingFieldError{Field: HeaderSource, In: "headers"}
	}
	if ts := get(HeaderTime); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return m, &MalformedError{Type: m.Type, Err: fmt.Errorf("header %s: %w", HeaderTime, err)}
		}
		m.Time = t
	}
	return m, nil
}

// headerGetter reads the first value of a header by its exact (case-sensitive) name.
func headerGetter(h nats.Header) func(string) string {
	return func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
}
