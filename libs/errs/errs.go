// Package errs is Outpost's one error table, like nats-server's JetStream API errors: every
// error that crosses a boundary has a stable code here, with its HTTP status and whether
// retrying can help. The bus's ServiceErrors carry the code (err_code), the gateway's
// problem+json types are made from it, and probe results' error codes (envelope.Error.Code)
// are rows of it too, so a caller decides on a code, never on the wording of a message.
//
// A code never changes meaning once shipped; add a row rather than reuse one. The table's
// tests check that every code the services use is a row and that no code, name or API status
// appears twice.
package errs

import (
	"net/http"
	"strings"
	"sync"
)

// Code is a stable error code, as it appears on the wire.
type Code string

// Scope says where a code may appear.
type Scope uint8

const (
	// API: a bus ServiceError (svc.<service>.<op>) and the gateway's problem+json type.
	API Scope = 1 << iota
	// Result: a probe result's envelope.Error.Code, set by a bridge's probe kind.
	Result
	// DeadLetter: a dead-lettered message's outpost-dlq-code header.
	DeadLetter
)

// API errors.
const (
	BadRequest   Code = "bad_request"
	Unauthorized Code = "unauthorized"
	Forbidden    Code = "forbidden"
	NotFound     Code = "not_found"
	Conflict     Code = "conflict"
	Gone         Code = "gone"
	RateLimited  Code = "rate_limited"
	Internal     Code = "internal"
	Upstream     Code = "upstream"
	Unavailable  Code = "unavailable"
	Timeout      Code = "timeout"
)

// Result errors: why a probe failed (services/bridge/probe uses these values).
const (
	BadParams   Code = "bad_params"
	Decode      Code = "decode"
	Denied      Code = "denied"
	Unreachable Code = "unreachable"
	AuthFailed  Code = "auth_failed"
	Protocol    Code = "protocol"
	TooLarge    Code = "too_large"
	Unsupported Code = "unsupported"
	Canceled    Code = "canceled"
	HostKey     Code = "host_key_mismatch"
	Panic       Code = "panic"
	Expired     Code = "expired"
	NotReplayed Code = "not_replayed"
	WinRMFault  Code = "winrm_fault"
)

// Dead-letter reasons (libs/bus uses these values).
const (
	Permanent     Code = "permanent"
	MaxDeliveries Code = "max_deliveries"
)

// Entry is one row of the table.
type Entry struct {
	Name      string // the Go constant of the code
	Code      Code
	Status    int  // HTTP status of an API error; 0 for codes only seen in results or dead letters
	Retryable bool // whether the same request may succeed later
	Scope     Scope
	Doc       string
}

// Table lists every code. Keep it ordered by scope, then by status.
var Table = []Entry{
	{"BadRequest", BadRequest, http.StatusBadRequest, false, API, "the request is malformed or a field is invalid; the message names the field"},
	{"Unauthorized", Unauthorized, http.StatusUnauthorized, false, API, "no token, or an unknown or revoked one"},
	{"Forbidden", Forbidden, http.StatusForbidden, false, API, "the caller's role or key may not do this"},
	{"NotFound", NotFound, http.StatusNotFound, false, API, "no such object (site, agent, run, CI, credential…)"},
	{"Conflict", Conflict, http.StatusConflict, false, API, "the object exists, or is not in a state that allows this"},
	{"Gone", Gone, http.StatusGone, false, API, "the object existed but is no longer kept (e.g. a workflow step's output past its run history's retention)"},
	{"RateLimited", RateLimited, http.StatusTooManyRequests, true, API, "too many failed attempts from this address: wait and retry"},
	{"Internal", Internal, http.StatusInternalServerError, false, API | Result, "a bug: report it with the message"},
	{"Upstream", Upstream, http.StatusBadGateway, true, API, "the gateway could not reach or understand a service"},
	{"Unavailable", Unavailable, http.StatusServiceUnavailable, true, API, "a store or service is down or not provisioned yet: retry shortly"},
	{"Timeout", Timeout, http.StatusGatewayTimeout, true, API | Result, "the deadline passed before an answer"},

	{"BadParams", BadParams, 0, false, Result, "probe params missing, malformed or beyond a limit"},
	{"Decode", Decode, 0, false, Result | DeadLetter, "the message itself could not be read: never retried"},
	{"Denied", Denied, 0, false, Result, "outside the bridge's allow-list, or the kind is not granted"},
	{"Unreachable", Unreachable, 0, true, Result, "connection refused, no route"},
	{"AuthFailed", AuthFailed, 0, false, Result, "every credential was refused"},
	{"Protocol", Protocol, 0, false, Result, "the peer spoke something else, or garbage"},
	{"TooLarge", TooLarge, 0, false, Result, "output beyond the limit"},
	{"Unsupported", Unsupported, 0, false, Result, "the kind cannot do what was asked"},
	{"Canceled", Canceled, 0, true, Result, "the probe was cancelled (drain, shutdown)"},
	{"HostKey", HostKey, 0, false, Result, "an SSH host key differs from the known one: nothing was sent"},
	{"WinRMFault", WinRMFault, 0, false, Result, "the WinRM service answered with a WS-Management fault (quota, policy, configuration)"},
	{"NotReplayed", NotReplayed, 0, false, Result, "a replayed probe (outpost replay) the stored results do not answer: the original was never sent, or its results aged out of RESULTS"},
	{"Expired", Expired, 0, true, Result, "the probe's deadline passed before a bridge started it (it waited in the queue): nothing was sent to the target; send it again"},
	{"Panic", Panic, 0, false, Result, "the probe kind panicked (a bug in the bridge): the stack is in the bridge log; the probe is not retried"},

	{"Permanent", Permanent, 0, false, DeadLetter, "the handler said retrying cannot help"},
	{"MaxDeliveries", MaxDeliveries, 0, false, DeadLetter, "failed on every delivery"},
}

// index is the table by code and, for API codes, by status.
var index = sync.OnceValues(func() (map[Code]Entry, map[int]Entry) {
	byCode, byStatus := map[Code]Entry{}, map[int]Entry{}
	for _, e := range Table {
		byCode[e.Code] = e
		if e.Scope&API != 0 {
			byStatus[e.Status] = e
		}
	}
	return byCode, byStatus
})

// Lookup returns the row of a code.
func Lookup(c Code) (Entry, bool) {
	byCode, _ := index()
	e, ok := byCode[c]
	return e, ok
}

// ForStatus returns the API row of an HTTP status; a status without one is Internal's row
// with that status (a service answering 418 is a bug, but its status is kept).
func ForStatus(status int) Entry {
	byCode, byStatus := index()
	if e, ok := byStatus[status]; ok {
		return e
	}
	e := byCode[Internal]
	e.Status = status
	return e
}

// ProblemBase prefixes the problem+json type of every API code (RFC 9457).
const ProblemBase = "https://outpost.dev/problems/"

// ProblemType is the stable problem+json type URI of a code: its words joined by hyphens
// ("not_found" is https://outpost.dev/problems/not-found).
func (c Code) ProblemType() string { return ProblemBase + strings.ReplaceAll(string(c), "_", "-") }

// Retryable reports whether a code's row says retrying may help (false for unknown codes).
func (c Code) Retryable() bool {
	e, _ := Lookup(c)
	return e.Retryable
}
