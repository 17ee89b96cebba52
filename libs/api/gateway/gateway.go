// Package gateway is the contract of what the gateway answers itself under /api/v1 (status,
// identity, API tokens, audit, dead letters, problems): the console and the CLI decode the
// gateway's answers with these types.
package gateway

import (
	"encoding/json"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
)

// Identity is the body of GET /api/v1/whoami: who the calling token is.
type Identity struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// Health is the body of a healthy GET /healthz.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}

// Status is the body of GET /api/v1/status.
type Status struct {
	Version string         `json:"version"`
	Streams []StreamStatus `json:"streams"`
	DLQ     DLQStatus      `json:"dlq"`
	// Rates are per-second rates over about the last minute (the gateway's /metrics
	// observer); absent before it has run.
	Rates *Rates `json:"rates,omitempty"`
}

// Rates are what flows through the hub, per second.
type Rates struct {
	WindowSeconds float64 `json:"window_s"`
	Probes        float64 `json:"probes_per_s"`
	ScanAddresses float64 `json:"scan_addresses_per_s"`
	CMDBIngested  float64 `json:"cmdb_cis_per_s"`
	AlertWrites   float64 `json:"alert_writes_per_s"`
}

// StreamStatus is one stream and its consumers.
type StreamStatus struct {
	Name      string           `json:"name"`
	Messages  uint64           `json:"messages"`
	Bytes     uint64           `json:"bytes"`
	Consumers []ConsumerStatus `json:"consumers"`
}

// ConsumerStatus is the lag of one durable consumer.
type ConsumerStatus struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
}

// DLQStatus is the size of the dead-letter stream.
type DLQStatus struct {
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
}

// Token is an API token as stored and listed: never the secret itself.
type Token struct {
	ID      string    `json:"id"` // first 12 hex chars of the hash: safe to show
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked,omitempty"`
}

// TokenCreateRequest is the body of POST /api/v1/tokens.
type TokenCreateRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// TokenCreated is the answer of POST /api/v1/tokens: the secret, shown once.
type TokenCreated struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// TokenList is one page of API tokens, oldest first.
type TokenList struct {
	Tokens     []Token `json:"tokens"`
	NextCursor string  `json:"next_cursor"`
}

// TokenRevoked lists the tokens DELETE /api/v1/tokens/{id} revoked.
type TokenRevoked struct {
	Revoked []Token `json:"revoked"`
}

// AuditEvent is one audit event with its position in the EVENTS stream.
type AuditEvent struct {
	Seq uint64 `json:"seq"`
	envelope.Audit
}

// AuditList is one page of audit events, oldest first.
type AuditList struct {
	Events     []AuditEvent `json:"events"`
	NextCursor string       `json:"next_cursor"`
}

// DLQItem is a dead-lettered message as GET /api/v1/dlq lists it. Data is the first 2 KiB of
// the body as text, or base64 (DataBase64) when that is not valid UTF-8. Code is a dead-letter
// code of the error table (libs/errs).
type DLQItem struct {
	Seq           uint64 `json:"seq"`
	Subject       string `json:"subject"`
	Code          string `json:"code"`
	Reason        string `json:"reason"`
	SourceSubject string `json:"source_subject"`
	SourceStream  string `json:"source_stream"`
	Deliveries    int    `json:"deliveries"`
	Service       string `json:"service"`
	Time          string `json:"time"`
	Size          int    `json:"size"`
	Data          string `json:"data"`
	DataBase64    bool   `json:"data_base64,omitempty"`
	Truncated     bool   `json:"truncated"`
}

// When is the time the message was dead-lettered (zero when the API did not say).
func (d DLQItem) When() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, d.Time)
	return t
}

// DLQList is one page of dead letters, oldest first.
type DLQList struct {
	Items      []DLQItem `json:"items"`
	NextCursor string    `json:"next_cursor"`
}

// Problem is an RFC 9457 problem detail: every error of the API. Type is the error table's
// problem type of its code (libs/errs: https://outpost.dev/problems/not-found).
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// ProbeKind is one probe kind as the API describes it, from its contract in libs/probes:
// what to grant a site for it, which stored credentials it takes, its params' JSON Schema
// (the one the bridge validates against) and its own error codes.
type ProbeKind struct {
	Kind            string          `json:"kind"`
	Description     string          `json:"description"`
	Capability      string          `json:"capability"`
	CredentialTypes []string        `json:"credential_types"`
	Params          json.RawMessage `json:"params"`
	Codes           []probes.Code   `json:"codes,omitempty"`
}

// ProbeKindList is GET /api/v1/probe-kinds: every kind, and every result code.
type ProbeKindList struct {
	Items []ProbeKind   `json:"items"`
	Codes []probes.Code `json:"codes"`
}
