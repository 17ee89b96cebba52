// Package dlq is the contract of the dead-letter operations (svc.dlq.<op>): show one dead
// letter whole, retry dead letters to their original subject, purge them. The hub's DLQ
// service (libs/bus/deadletters) serves it; the gateway relays it under /api/v1/dlq and the
// CLI's `outpost dlq` decodes its answers. Listing stays the gateway's own (GET /api/v1/dlq).
package dlq

import (
	"errors"
	"fmt"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
)

// Service is the name on the bus: svc.dlq.<op>.
const Service = "dlq"

// Operations of svc.dlq.<op>.
var (
	Show  = bus.Op[ShowRequest, Message]{Service: Service, Name: "show"}
	Retry = bus.Op[RetryRequest, RetryReply]{Service: Service, Name: "retry"}
	Purge = bus.Op[PurgeRequest, PurgeReply]{Service: Service, Name: "purge"}
)

// Ops lists every operation of the service.
func Ops() []bus.OpSpec { return []bus.OpSpec{Show.Spec(), Retry.Spec(), Purge.Spec()} }

// Headers of a retried message: how many times it was retried from the DLQ, and the DLQ
// sequence it was retried from last. A handler may read them; nothing grants anything on
// them.
const (
	HeaderRetry   = "outpost-retry"
	HeaderRetryOf = "outpost-retry-of"
)

// ShowRequest names one dead letter by its DLQ sequence (the SEQ of `outpost dlq ls`).
type ShowRequest struct {
	Seq uint64 `json:"seq"`
}

// Message is one dead letter whole: where it sits, why it failed, where it came from, its
// original headers and body.
type Message struct {
	Seq           uint64              `json:"seq"`
	Subject       string              `json:"subject"` // dlq.<service>.<origin>
	Origin        string              `json:"origin"`  // the site it came from, or hub
	Code          string              `json:"code"`
	Reason        string              `json:"reason"`
	Service       string              `json:"service"`
	SourceSubject string              `json:"source_subject"`
	SourceStream  string              `json:"source_stream"`
	SourceSeq     uint64              `json:"source_seq"`
	Deliveries    int                 `json:"deliveries"`
	Consumer      string              `json:"consumer"`
	Time          time.Time           `json:"time"`
	Retries       int                 `json:"retries"` // times it was retried before it failed again
	Headers       map[string][]string `json:"headers"` // the original message's headers
	Data          string              `json:"data"`
	DataBase64    bool                `json:"data_base64,omitempty"`
	// Retryable says whether `dlq retry` may send it back, and RetryRefusal why not.
	Retryable    bool   `json:"retryable"`
	RetryRefusal string `json:"retry_refusal,omitempty"`
}

// Filter selects dead letters: by code, by the service that dead-lettered them, by age.
type Filter struct {
	Code    string `json:"code,omitempty"`
	Service string `json:"service,omitempty"`
	// OlderThan is a Go duration (72h, 30m): only dead letters at least that old.
	OlderThan string `json:"older_than,omitempty"`
}

// Age is OlderThan parsed (0 when empty).
func (f Filter) Age() (time.Duration, error) {
	if f.OlderThan == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(f.OlderThan)
	if err != nil || d < 0 {
		return 0, fmt.Errorf(`field "older_than": %q is not a duration such as 72h or 30m`, f.OlderThan)
	}
	return d, nil
}

// Empty reports whether the filter selects everything.
func (f Filter) Empty() bool { return f.Code == "" && f.Service == "" && f.OlderThan == "" }

// Validate reports every problem of the filter.
func (f Filter) Validate() error {
	var problems []error
	if f.Service != "" && !bus.ValidName(f.Service) {
		problems = append(problems, fmt.Errorf(`field "service": %q is not a service name such as discovery, cmdb or bridge`, f.Service))
	}
	if e, ok := errs.Lookup(errs.Code(f.Code)); f.Code != "" && (!ok || e.Scope&errs.DeadLetter == 0) {
		problems = append(problems, fmt.Errorf(`field "code": %q is not a dead-letter code: decode, permanent or max_deliveries`, f.Code))
	}
	if _, err := f.Age(); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// RetryRequest retries the dead letters Seqs, or every one the filter selects when All is
// set (the filter narrows All only).
type RetryRequest struct {
	Seqs []uint64 `json:"seqs,omitempty"`
	All  bool     `json:"all,omitempty"`
	Filter
}

// Validate reports every problem of the request.
func (r RetryRequest) Validate() error {
	var problems []error
	switch {
	case len(r.Seqs) == 0 && !r.All:
		problems = append(problems, errors.New(`give the dead letters to retry ("seqs") or "all"`))
	case len(r.Seqs) > 0 && r.All:
		problems = append(problems, errors.New(`give either "seqs" or "all", not both`))
	case len(r.Seqs) > 0 && !r.Filter.Empty():
		problems = append(problems, errors.New(`a filter narrows "all" only; for "seqs" leave code, service and older_than out`))
	}
	if len(r.Seqs) > MaxRetrySeqs {
		problems = append(problems, fmt.Errorf(`field "seqs": %d sequences, at most %d at once (use "all" with a filter)`, len(r.Seqs), MaxRetrySeqs))
	}
	return errors.Join(append(problems, r.Filter.Validate())...)
}

// MaxRetrySeqs bounds the sequences of one retry request.
const MaxRetrySeqs = 1000

// Retried is one dead letter sent back to its original subject.
type Retried struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Retry   int    `json:"retry"` // its outpost-retry header: 1 the first time
}

// NotRetried is one dead letter left in the DLQ, and why.
type NotRetried struct {
	Seq    uint64 `json:"seq"`
	Reason string `json:"reason"`
}

// RetryReply says what was sent back (and removed from the DLQ) and what was not. A retried
// message that fails again is dead-lettered again, under a new sequence.
type RetryReply struct {
	Retried    []Retried    `json:"retried"`
	NotRetried []NotRetried `json:"not_retried"`
}

// PurgeRequest deletes the dead letters the filter selects; an empty filter needs All.
type PurgeRequest struct {
	All bool `json:"all,omitempty"`
	Filter
}

// Validate reports every problem of the request.
func (r PurgeRequest) Validate() error {
	var problems []error
	if r.Filter.Empty() && !r.All {
		problems = append(problems, errors.New(`purging every dead letter needs "all"; or narrow it with code, service or older_than`))
	}
	return errors.Join(append(problems, r.Filter.Validate())...)
}

// PurgeReply counts the dead letters deleted.
type PurgeReply struct {
	Purged int `json:"purged"`
}
