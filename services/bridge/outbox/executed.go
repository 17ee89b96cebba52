package outbox

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
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
//
// The records are appended to segment files in <data>/executed (one write per record, the
// files synced once a second — the durability the outbox's own store has) and found
// through an in-memory index built from the files at open. It was one message per record
// in the outbox's embedded JetStream: a client round trip, a server store and a JSON
// publish ack per probe, ~10 µs of the bridge's CPU per echo probe. This process is the
// store's only writer (the files are in its data dir), so the index is complete: a probe
// not in it was not executed here. A segment is deleted once every record in it expired.
type Executed struct {
	dir      string
	clk      clock.Clock
	log      *slog.Logger
	maxMsgs  int
	maxBytes int64

	// syncMu orders the syncs (the loop's and Close's); they run outside mu, so a
	// record or a lookup never waits for an fsync (an fsync on a busy disk takes
	// milliseconds: under mu it stalled every probe starting or finishing meanwhile).
	syncMu sync.Mutex

	mu       sync.Mutex
	index    map[uint64]slot // hash of the probe id → where its record is
	spill    map[string]slot // the rare ids whose hash another live id already has
	segs     map[uint32]*segment
	active   *segment
	activeAt int64 // when the active segment was started (Unix s)
	bytes    int64 // of every segment on disk
	dirty    bool
	// unsynced are segments left for a new one with writes not yet synced, and dirDirty
	// that a segment file was created: both are synced by the next sync, within a second.
	unsynced []*os.File
	dirDirty bool
	lastTidy time.Time
	closed   bool
	stop     chan struct{}
	done     chan struct{}

	// legacy is the JetStream stream earlier bridges kept their records in, read (never
	// written) until its records have expired; nil when there is none.
	legacy      jetstream.Stream
	legacyKnown map[uint64]struct{}
}

// slot is where a record is: segment, offset of its frame, and when it expires (Unix s).
type slot struct {
	seg     uint32
	off     uint32
	expires int64
}

// segment is one append-only file of records.
type segment struct {
	id      uint32
	f       *os.File
	size    int64
	expires int64 // the latest expiry of its records (Unix s)
}

// Segment layout: frames of [payload length u32][CRC-32C of payload u32][payload]. A frame
// torn by a crash mid-write fails its length or checksum and ends the segment's reading.
const (
	frameHeader   = 8
	segmentMax    = 8 << 20 // a new segment after this many bytes, so old ones can leave whole
	segmentSpan   = 10 * time.Minute
	syncEvery     = time.Second
	tidyEvery     = time.Minute
	executedDir   = "executed"
	segmentSuffix = ".seg"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// knownSeed keys the index's hashes.
var knownSeed = maphash.MakeSeed()

func knownKey(probe string) uint64 { return maphash.String(knownSeed, probe) }

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

type executedConfig struct {
	dir      string
	maxMsgs  int64
	maxBytes int64
	clk      clock.Clock
	log      *slog.Logger
}

// openExecuted opens the store in cfg.dir, indexing the records its segments hold, and the
// JetStream stream of earlier bridges if js has one.
func openExecuted(ctx context.Context, js jetstream.JetStream, cfg executedConfig) (*Executed, error) {
	if err := os.MkdirAll(cfg.dir, 0o700); err != nil {
		return nil, fmt.Errorf("executed-probe store: %w", err)
	}
	e := &Executed{dir: cfg.dir, clk: cfg.clk, log: cfg.log, maxMsgs: int(cfg.maxMsgs), maxBytes: cfg.maxBytes,
		index: map[uint64]slot{}, spill: map[string]slot{}, segs: map[uint32]*segment{},
		lastTidy: cfg.clk.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	if err := e.load(); err != nil {
		e.closeFiles()
		return nil, err
	}
	if err := e.openLegacy(ctx, js); err != nil {
		e.closeFiles()
		return nil, err
	}
	go e.syncLoop()
	return e, nil
}

func segmentName(id uint32) string { return fmt.Sprintf("%010d%s", id, segmentSuffix) }

// load indexes every segment on disk; records past their expiry are left out, and a
// segment whose records all expired is deleted.
func (e *Executed) load() error {
	names, err := filepath.Glob(filepath.Join(e.dir, "*"+segmentSuffix))
	if err != nil {
		return fmt.Errorf("executed-probe store: %w", err)
	}
	slices.Sort(names)
	now := e.clk.Now().Unix()
	for _, name := range names {
		id, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), segmentSuffix), 10, 32)
		if err != nil {
			continue // not a segment this code writes
		}
		f, err := os.OpenFile(name, os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("executed-probe store: %w", err)
		}
		s := &segment{id: uint32(id), f: f}
		e.segs[s.id] = s
		torn, err := e.scan(s, now)
		if err != nil {
			return fmt.Errorf("executed-probe store: read %s: %w", name, err)
		}
		if torn {
			// The tail a crash cut short is dropped, so the next records of this segment
			// (none: a process always writes to a new segment) or a re-read start clean.
			e.log.Warn("executed-probe store: a record cut short by a crash was dropped (its probe was not yet acked, so the hub redelivers it)",
				"segment", name, "kept_bytes", s.size)
			if err := f.Truncate(s.size); err != nil {
				return fmt.Errorf("executed-probe store: truncate %s: %w", name, err)
			}
		}
		e.bytes += s.size
	}
	e.tidyLocked(e.clk.Now())
	return nil
}

// scan reads a segment's frames into the index; torn reports a tail that is not a whole,
// intact frame (s.size then ends before it).
func (e *Executed) scan(s *segment, now int64) (torn bool, err error) {
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, 1<<62), 64<<10)
	var hdr [frameHeader]byte
	off := int64(0)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			s.size = off
			return !errors.Is(err, io.EOF), nil
		}
		n := binary.LittleEndian.Uint32(hdr[:4])
		if int64(n) > segmentMax+(2<<20) {
			s.size = off
			return true, nil
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil || crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
			s.size = off
			return true, nil
		}
		rec, expires, err := decodeFrame(payload)
		if err != nil {
			s.size = off
			return true, nil
		}
		s.expires = max(s.expires, expires)
		if expires > now {
			e.place(rec.Probe, slot{seg: s.id, off: uint32(off), expires: expires}, now)
		}
		off += frameHeader + int64(n)
	}
}

// place indexes a record, keeping a live record of another id whose hash is the same.
func (e *Executed) place(probe string, sl slot, now int64) {
	k := knownKey(probe)
	old, ok := e.index[k]
	if ok && old.expires > now {
		if rec, _, err := e.readLocked(old); err == nil && rec.Probe != probe {
			e.spill[probe] = sl
			return
		}
	}
	e.index[k] = sl
}

// openLegacy finds the stream earlier bridges recorded in, if any, and indexes its records.
func (e *Executed) openLegacy(ctx context.Context, js jetstream.JetStream) error {
	if js == nil {
		return nil
	}
	st, err := js.Stream(ctx, legacyStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("executed-probe store: earlier records: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(legacyPrefix+">"))
	if err != nil {
		return fmt.Errorf("executed-probe store: list earlier records: %w", err)
	}
	e.legacy, e.legacyKnown = st, map[uint64]struct{}{}
	for subj := range info.State.Subjects {
		id, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(subj, legacyPrefix))
		if err == nil {
			e.legacyKnown[knownKey(string(id))] = struct{}{}
		}
	}
	return nil
}

// Record stores that a probe was executed, kept for ttl (at least a minute, at most
// ExecutedMaxTTL): pass the time until the probe's deadline, after which the hub no longer
// redelivers it. It returns once the record is written to the file (synced within a
// second, as the outbox's store).
func (e *Executed) Record(ctx context.Context, rec ExecutedRecord, ttl time.Duration) error {
	ttl = min(max(ttl, time.Minute), ExecutedMaxTTL)
	now := e.clk.Now()
	expires := now.Add(ttl).Unix()
	frame := encodeFrame(&rec, expires)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("record executed probe %s: store closed", rec.Probe)
	}
	if now.Sub(e.lastTidy) >= tidyEvery {
		e.tidyLocked(now)
	}
	if len(e.index)+len(e.spill) >= e.maxMsgs || e.bytes+int64(len(frame)) > e.maxBytes {
		e.tidyLocked(now) // expired records may make room
		if len(e.index)+len(e.spill) >= e.maxMsgs || e.bytes+int64(len(frame)) > e.maxBytes {
			return fmt.Errorf("%w: %d records, %d bytes (limits %d, %d)", ErrExecutedFull, len(e.index)+len(e.spill), e.bytes, e.maxMsgs, e.maxBytes)
		}
	}
	s, err := e.segmentFor(now, int64(len(frame)))
	if err != nil {
		return fmt.Errorf("record executed probe %s: %w", rec.Probe, err)
	}
	off := s.size
	if _, err := s.f.WriteAt(frame, off); err != nil {
		// A partial write is overwritten by the next record; it is never indexed.
		return fmt.Errorf("record executed probe %s: %w", rec.Probe, err)
	}
	s.size += int64(len(frame))
	s.expires = max(s.expires, expires)
	e.bytes += int64(len(frame))
	e.dirty = true
	e.place(rec.Probe, slot{seg: s.id, off: uint32(off), expires: expires}, now.Unix())
	return nil
}

// segmentFor is the segment the next record goes to: a new one when the active one is
// large or old enough that its records should leave together.
func (e *Executed) segmentFor(now time.Time, n int64) (*segment, error) {
	s := e.active
	if s != nil && s.size+n <= segmentMax && now.Unix() < e.activeAt+int64(segmentSpan/time.Second) {
		return s, nil
	}
	if s != nil && e.dirty {
		e.unsynced = append(e.unsynced, s.f)
	}
	id := uint32(1)
	for sid := range e.segs {
		id = max(id, sid+1)
	}
	name := filepath.Join(e.dir, segmentName(id))
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	e.dirDirty = true // the new file's name survives a power cut once the directory is synced
	s = &segment{id: id, f: f}
	e.segs[id] = s
	e.active = s
	e.activeAt = now.Unix()
	return s, nil
}

// tidyLocked drops index entries past their expiry and deletes the segments (not the
// active one) whose every record expired.
func (e *Executed) tidyLocked(now time.Time) {
	e.lastTidy = now
	t := now.Unix()
	for k, sl := range e.index {
		if sl.expires <= t {
			delete(e.index, k)
		}
	}
	for id, sl := range e.spill {
		if sl.expires <= t {
			delete(e.spill, id)
		}
	}
	for id, s := range e.segs {
		if s == e.active || s.expires > t {
			continue
		}
		s.f.Close()
		if err := os.Remove(filepath.Join(e.dir, segmentName(id))); err != nil && !errors.Is(err, os.ErrNotExist) {
			e.log.Warn("executed-probe store: expired segment not deleted", "segment", segmentName(id), "err", err)
			continue
		}
		e.bytes -= s.size
		delete(e.segs, id)
	}
}

// syncLoop syncs the active segment once a second when it was written to.
func (e *Executed) syncLoop() {
	defer close(e.done)
	t := e.clk.NewTicker(syncEvery)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C():
			e.sync()
		}
	}
}

// sync makes what was written so far durable. The fsyncs run without mu: records written
// meanwhile are either in this sync or marked dirty for the next one.
func (e *Executed) sync() {
	e.syncMu.Lock()
	defer e.syncMu.Unlock()
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	files := e.unsynced
	e.unsynced = nil
	if e.dirty && e.active != nil {
		files = append(files, e.active.f)
	}
	e.dirty = false
	dir := e.dirDirty
	e.dirDirty = false
	e.mu.Unlock()
	for _, f := range files {
		// A segment deleted meanwhile (all its records expired) is closed: nothing to keep.
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			e.log.Warn("executed-probe store: sync failed", "err", err)
		}
	}
	if dir {
		if d, err := os.Open(e.dir); err == nil {
			if err := d.Sync(); err != nil {
				e.log.Warn("executed-probe store: sync of the directory failed", "err", err)
			}
			d.Close()
		}
	}
}

// Close syncs and closes the store.
func (e *Executed) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	close(e.stop)
	<-e.done
	e.sync()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	e.closeFiles()
}

func (e *Executed) closeFiles() {
	for _, s := range e.segs {
		s.f.Close()
	}
}

// Lookup returns the record of a probe this bridge executed, or nil when it did not (or the
// record's time is up). surely=true also reads earlier bridges' records whatever their
// index says (a redelivery); the segments' index is complete either way.
func (e *Executed) Lookup(ctx context.Context, probe string, surely bool) (*ExecutedRecord, error) {
	e.mu.Lock()
	now := e.clk.Now().Unix()
	sl, ok := e.spill[probe]
	if !ok {
		sl, ok = e.index[knownKey(probe)]
	}
	if ok && sl.expires > now {
		rec, _, err := e.readLocked(sl)
		e.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("executed probe %s: unreadable record: %w", probe, err)
		}
		if rec.Probe == probe {
			return rec, nil
		}
	} else {
		e.mu.Unlock()
	}
	return e.lookupLegacy(ctx, probe, surely)
}

// readLocked reads the record at sl.
func (e *Executed) readLocked(sl slot) (*ExecutedRecord, int64, error) {
	s, ok := e.segs[sl.seg]
	if !ok {
		return nil, 0, fmt.Errorf("segment %s is gone", segmentName(sl.seg))
	}
	var hdr [frameHeader]byte
	if _, err := s.f.ReadAt(hdr[:], int64(sl.off)); err != nil {
		return nil, 0, err
	}
	payload := make([]byte, binary.LittleEndian.Uint32(hdr[:4]))
	if _, err := s.f.ReadAt(payload, int64(sl.off)+frameHeader); err != nil {
		return nil, 0, err
	}
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:]) {
		return nil, 0, fmt.Errorf("checksum mismatch in %s at %d", segmentName(sl.seg), sl.off)
	}
	return decodeFrame(payload)
}

// Len is the number of records kept (earlier bridges' included).
func (e *Executed) Len(ctx context.Context) (uint64, error) {
	e.mu.Lock()
	now := e.clk.Now().Unix()
	n := uint64(len(e.spill))
	for _, sl := range e.index {
		if sl.expires > now {
			n++
		}
	}
	e.mu.Unlock()
	if e.legacy != nil {
		info, err := e.legacy.Info(ctx)
		if err != nil {
			return 0, err
		}
		n += info.State.Msgs
	}
	return n, nil
}

// encodeFrame is a record as it is written: frame header, then expiry (Unix s), finished
// (Unix ns, 0 for none), attempt, results, probe, subject, headers, and the data to the end.
func encodeFrame(r *ExecutedRecord, expires int64) []byte {
	n := 8 + 8 + 2*binary.MaxVarintLen64 + 3*binary.MaxVarintLen32 + len(r.Probe) + len(r.Subject) + len(r.Data)
	for k, vs := range r.Header {
		n += 2*binary.MaxVarintLen32 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen32 + len(v)
		}
	}
	b := make([]byte, frameHeader, frameHeader+n)
	b = binary.LittleEndian.AppendUint64(b, uint64(expires))
	finished := int64(0)
	if !r.Finished.IsZero() {
		finished = r.Finished.UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(finished))
	b = binary.AppendUvarint(b, uint64(r.Attempt))
	b = binary.AppendUvarint(b, uint64(r.Results))
	str := func(s string) { b = binary.AppendUvarint(b, uint64(len(s))); b = append(b, s...) }
	str(r.Probe)
	str(r.Subject)
	b = binary.AppendUvarint(b, uint64(len(r.Header)))
	for k, vs := range r.Header {
		str(k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			str(v)
		}
	}
	b = append(b, r.Data...)
	payload := b[frameHeader:]
	binary.LittleEndian.PutUint32(b[:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:8], crc32.Checksum(payload, crcTable))
	return b
}

var errShortFrame = errors.New("record shorter than its fields")

// decodeFrame reads a frame's payload back.
func decodeFrame(p []byte) (*ExecutedRecord, int64, error) {
	if len(p) < 16 {
		return nil, 0, errShortFrame
	}
	expires := int64(binary.LittleEndian.Uint64(p))
	finished := int64(binary.LittleEndian.Uint64(p[8:]))
	p = p[16:]
	num := func() (uint64, error) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, errShortFrame
		}
		p = p[n:]
		return v, nil
	}
	str := func() (string, error) {
		n, err := num()
		if err != nil || n > uint64(len(p)) {
			return "", errShortFrame
		}
		s := string(p[:n])
		p = p[n:]
		return s, nil
	}
	rec := &ExecutedRecord{}
	if finished != 0 {
		rec.Finished = time.Unix(0, finished).UTC()
	}
	var err error
	var v uint64
	if v, err = num(); err != nil {
		return nil, 0, err
	}
	rec.Attempt = int(v)
	if v, err = num(); err != nil {
		return nil, 0, err
	}
	rec.Results = int(v)
	if rec.Probe, err = str(); err != nil {
		return nil, 0, err
	}
	if rec.Subject, err = str(); err != nil {
		return nil, 0, err
	}
	nh, err := num()
	if err != nil || nh > uint64(len(p)) {
		return nil, 0, errShortFrame
	}
	rec.Header = make(nats.Header, nh)
	for range nh {
		k, err := str()
		if err != nil {
			return nil, 0, err
		}
		nv, err := num()
		if err != nil || nv > uint64(len(p)) {
			return nil, 0, errShortFrame
		}
		vs := make([]string, 0, nv)
		for range nv {
			s, err := str()
			if err != nil {
				return nil, 0, err
			}
			vs = append(vs, s)
		}
		rec.Header[k] = vs
	}
	rec.Data = p
	return rec, expires, nil
}

// The stream earlier bridges kept their records in (one message per record).
const (
	legacyStream = "EXECUTED"
	legacyPrefix = "executed."
)

// legacySubject is a record's subject in the earlier stream (the probe id encoded).
func legacySubject(probe string) string {
	return legacyPrefix + base64.RawURLEncoding.EncodeToString([]byte(probe))
}

func (e *Executed) lookupLegacy(ctx context.Context, probe string, surely bool) (*ExecutedRecord, error) {
	if e.legacy == nil {
		return nil, nil
	}
	if _, known := e.legacyKnown[knownKey(probe)]; !known && !surely {
		return nil, nil
	}
	raw, err := e.legacy.GetLastMsgForSubject(ctx, legacySubject(probe))
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

// Headers of a record in the earlier stream.
const (
	recordResultHeader = "Outpost-Result-" // prefix of the final result's own headers
	recordSubject      = "Outpost-Executed-Subject"
	recordAttempt      = "Outpost-Executed-Attempt"
	recordResults      = "Outpost-Executed-Results"
	recordFinished     = "Outpost-Executed-Finished"
)

// decodeRecord reads a record of the earlier stream, in either of its layouts (headers,
// or JSON before that).
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

func isMsgNotFound(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound
}
