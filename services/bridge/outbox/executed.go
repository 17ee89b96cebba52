package outbox

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The executed-probe store lives in the outbox's embedded store, so it is on disk in the same
// data dir, survives the same restarts and is read by the next bridge process over that dir.
const (
	executedStream = "EXECUTED"
	executedPrefix = "executed."
)

// Limits of the executed-probe store: records leave at their TTL; these only bound a burst
// of long-deadline probes. A full store refuses new records (counted and logged by the
// bridge) rather than evict one whose probe may still be redelivered.
const (
	DefaultExecutedMaxMsgs  = 200_000
	DefaultExecutedMaxBytes = 128 << 20
	// ExecutedMaxTTL caps how long one record is kept, whatever the probe's deadline.
	ExecutedMaxTTL = 7 * 24 * time.Hour
)

// ErrExecutedFull is returned by Executed.Record when the store holds its limit.
var ErrExecutedFull = errors.New("executed-probe store full")

// Executed is the bridge's record of the probes it executed, by probe id: a redelivered
// probe (its ack lost, the bridge restarted between running it and the hub's ack, a
// republish with the same id) is not run again — its stored final result is sent instead.
// The probe id is the idempotency key: orchestration's is run + step + attempt, so a
// step's effect happens at most once per attempt on this bridge.
type Executed struct {
	js jetstream.JetStream
	st jetstream.Stream

	// known indexes the probes the store may hold, so that the common case — a probe seen
	// for the first time — is answered without a request to the store (one JetStream API
	// round trip per probe was a fifth of the bridge's CPU per echo probe). It is a
	// superset: every record made by this process and every record on disk at open, until
	// well past its TTL; a hit is confirmed by the store. This process is the store's only
	// writer (the store is embedded, in its data dir), so a probe not in known was not
	// executed here.
	mu        sync.Mutex
	known     map[uint64]int64 // hash of the probe id → when its record has surely left (Unix s)
	lastPrune time.Time
}

// knownSeed keys the index's hashes; a collision only costs a lookup.
var knownSeed = maphash.MakeSeed()

func knownKey(probe string) uint64 { return maphash.String(knownSeed, probe) }

// pruneEvery bounds how often the index drops entries whose record left at its TTL.
const pruneEvery = time.Minute

// knownSlack keeps an index entry past its record's TTL: the server expires records on its
// own timer, a little after the TTL.
const knownSlack = time.Minute

// ExecutedRecord is one executed probe: the execution (attempt) that ran it and its final
// result as it went to the outbox (hub subject, headers, body).
type ExecutedRecord struct {
	Probe    string      `json:"probe"`
	Attempt  int         `json:"attempt"`
	Results  int         `json:"results"` // results the execution made, chunks and final
	Subject  string      `json:"subject"`
	Header   nats.Header `json:"header"`
	Data     []byte      `json:"data"`
	Finished time.Time   `json:"finished"`
}

// FinalID is the id (Nats-Msg-Id) of the record's final result.
func (r *ExecutedRecord) FinalID() string { return r.Header.Get(nats.MsgIdHdr) }

// Msg is the final result as it is published to the hub.
func (r *ExecutedRecord) Msg() *nats.Msg {
	h := nats.Header{}
	for k, v := range r.Header {
		h[k] = append([]string(nil), v...)
	}
	return &nats.Msg{Subject: r.Subject, Header: h, Data: r.Data}
}

func openExecuted(ctx context.Context, js jetstream.JetStream, maxMsgs, maxBytes int64) (*Executed, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: executedStream, Description: "probes this bridge executed, with their final result, until their deadline has passed",
		Subjects: []string{executedPrefix + ">"}, Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
		MaxMsgsPerSubject: 1, MaxMsgs: maxMsgs, MaxBytes: maxBytes, MaxAge: ExecutedMaxTTL,
		Discard: jetstream.DiscardNew, AllowMsgTTL: true,
	})
	if err != nil {
		return nil, fmt.Errorf("executed-probe store: %w", err)
	}
	e := &Executed{js: js, st: st, known: map[uint64]int64{}, lastPrune: time.Now()}
	if err := e.loadKnown(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// loadKnown indexes the records on disk (left by an earlier process over this data dir).
// Their TTL is not read back: each is kept in the index for ExecutedMaxTTL, the longest a
// record lives.
func (e *Executed) loadKnown(ctx context.Context) error {
	info, err := e.st.Info(ctx, jetstream.WithSubjectFilter(executedPrefix+">"))
	if err != nil {
		return fmt.Errorf("executed-probe store: list records: %w", err)
	}
	until := time.Now().Add(ExecutedMaxTTL + knownSlack).Unix()
	for subj := range info.State.Subjects {
		id, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(subj, executedPrefix))
		if err != nil {
			continue // not a record subject this code writes
		}
		e.known[knownKey(string(id))] = until
	}
	return nil
}

// remember adds a probe to the index until ttl (as the record's Nats-TTL) has surely
// passed, and drops entries long expired. The server's TTL runs on the wall clock, so does
// this: an injected clock cannot make an entry leave before its record.
func (e *Executed) remember(probe string, ttl time.Duration) {
	now := time.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.known[knownKey(probe)] = now.Add(ttl + knownSlack).Unix()
	if now.Sub(e.lastPrune) < pruneEvery {
		return
	}
	e.lastPrune = now
	for k, until := range e.known {
		if now.Unix() > until {
			delete(e.known, k)
		}
	}
}

// mayHold reports whether the store may hold a record of the probe.
func (e *Executed) mayHold(probe string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.known[knownKey(probe)]
	return ok
}

// executedSubject is the record's subject: probe ids are chosen by the hub's services and
// may hold characters a subject token cannot, so the id is encoded.
func executedSubject(probe string) string {
	return executedPrefix + base64.RawURLEncoding.EncodeToString([]byte(probe))
}

// Record stores that a probe was executed, kept for ttl (at least a minute, at most
// ExecutedMaxTTL): pass the time until the probe's deadline, after which the hub no longer
// redelivers it. It returns once the record is on disk.
//
// The record is the final result itself — its data as the body, its headers renamed under
// recordResultHeader (a result's Nats-Msg-Id must not act on this stream) — with the
// execution in a few headers of its own: no JSON, no base64 of the data.
func (e *Executed) Record(ctx context.Context, rec ExecutedRecord, ttl time.Duration) error {
	ttl = min(max(ttl, time.Minute), ExecutedMaxTTL)
	h := make(nats.Header, len(rec.Header)+5)
	for k, v := range rec.Header {
		h[recordResultHeader+k] = v
	}
	h[recordSubject] = []string{rec.Subject}
	h[recordAttempt] = []string{strconv.Itoa(rec.Attempt)}
	h[recordResults] = []string{strconv.Itoa(rec.Results)}
	h[recordFinished] = []string{rec.Finished.UTC().Format(time.RFC3339Nano)}
	h["Nats-TTL"] = []string{ttl.Round(time.Second).String()}
	m := &nats.Msg{Subject: executedSubject(rec.Probe), Header: h, Data: rec.Data}
	// Indexed before the write: a record stored but not indexed would be missed, one
	// indexed but not stored only costs a lookup.
	e.remember(rec.Probe, ttl)
	if _, err := e.js.PublishMsg(ctx, m); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && strings.Contains(apiErr.Description, "maximum") {
			return fmt.Errorf("%w: %v", ErrExecutedFull, err)
		}
		return fmt.Errorf("record executed probe %s: %w", rec.Probe, err)
	}
	return nil
}

// Headers of a stored record.
const (
	recordResultHeader = "Outpost-Result-" // prefix of the final result's own headers
	recordSubject      = "Outpost-Executed-Subject"
	recordAttempt      = "Outpost-Executed-Attempt"
	recordResults      = "Outpost-Executed-Results"
	recordFinished     = "Outpost-Executed-Finished"
)

// decodeRecord reads a stored record; one written as JSON (bridges before the header
// layout) is read too, so an upgrade keeps the records on disk.
func decodeRecord(probe string, h nats.Header, data []byte) (*ExecutedRecord, error) {
	if h.Get(recordSubject) == "" {
		var rec ExecutedRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return nil, err
		}
		return &rec, nil
	}
	rec := &ExecutedRecord{Probe: probe, Subject: h.Get(recordSubject), Header: nats.Header{}, Data: data}
	var errs []error
	var err error
	if rec.Attempt, err = strconv.Atoi(h.Get(recordAttempt)); err != nil {
		errs = append(errs, fmt.Errorf("header %s: %w", recordAttempt, err))
	}
	if rec.Results, err = strconv.Atoi(h.Get(recordResults)); err != nil {
		errs = append(errs, fmt.Errorf("header %s: %w", recordResults, err))
	}
	if rec.Finished, err = time.Parse(time.RFC3339Nano, h.Get(recordFinished)); err != nil {
		errs = append(errs, fmt.Errorf("header %s: %w", recordFinished, err))
	}
	for k, v := range h {
		if name, ok := strings.CutPrefix(k, recordResultHeader); ok {
			rec.Header[name] = v
		}
	}
	return rec, errors.Join(errs...)
}

// Lookup returns the record of a probe this bridge executed, or nil when it did not (or the
// record's time is up). A probe the index does not know is answered without reading the
// store; Lookup with surely=true reads the store whatever the index says.
func (e *Executed) Lookup(ctx context.Context, probe string, surely bool) (*ExecutedRecord, error) {
	if !surely && !e.mayHold(probe) {
		return nil, nil
	}
	raw, err := e.st.GetLastMsgForSubject(ctx, executedSubject(probe))
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) || isMsgNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up executed probe %s: %w", probe, err)
	}
	rec, err := decodeRecord(probe, raw.Header, raw.Data)
	if err != nil {
		return nil, fmt.Errorf("executed probe %s: unreadable record: %w", probe, err)
	}
	return rec, nil
}

// Len is the number of records kept.
func (e *Executed) Len(ctx context.Context) (uint64, error) {
	info, err := e.st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

func isMsgNotFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound
}
