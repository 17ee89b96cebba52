package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/services/importer/source"
	"github.com/outpost-dev/outpost/services/importer/transform"
)

// stagedRow is a row in the import set (import.<set>.rows).
type stagedRow struct {
	N    int64          `json:"n"`
	Pos  api.Position   `json:"pos"`
	Cols map[string]any `json:"cols,omitempty"`
	Err  string         `json:"err,omitempty"`
	// Next (paged sources, on a page's last row) is the cursor of the page after this row's;
	// Last says the page was the source's last. With Pos.Page and Pos.Index they are where a
	// restarted run resumes: the last staged row says it, atomically with the rows.
	Next string `json:"next,omitempty"`
	Last bool   `json:"last,omitempty"`
}

// outcomeMsg is a row's outcome (import.<run>.out.<outcome>). RowSeq is the staged row's
// stream sequence, to show its columns.
type outcomeMsg struct {
	N       int64        `json:"n"`
	RowSeq  uint64       `json:"row_seq,omitempty"`
	Pos     api.Position `json:"pos"`
	Outcome string       `json:"outcome"`
	Reason  string       `json:"reason,omitempty"`
	CI      string       `json:"ci,omitempty"`
}

// pending is a row whose payload went to the CMDB.
type pending struct {
	seq  uint64
	pos  api.Position
	sent time.Time
}

// runState is a run being worked on; rec is written through to KV by saveLoop.
type runState struct {
	mu      sync.Mutex
	rec     *record
	m       *transform.Map
	done    bitset
	pending map[int64]pending
	dirty   bool
	fatal   string    // the source could not be read to its end
	moved   time.Time // last outcome or staged row: how long receipts have been awaited
	wake    chan struct{}
	// saveMu orders the writes of the record; finished is set with the final one, after
	// which the save loop writes no older copy over it.
	saveMu   sync.Mutex
	finished bool
	// ready is closed once a resumed run's outcomes so far are read back (nil: a new run);
	// receipts wait for it so that no row is counted twice.
	ready chan struct{}
	// doubt is the SentMark a resumed run found: rows up to it without an outcome may have
	// been ingested before the restart. insertedCIs (non-nil with doubt) are the CIs rows of
	// the run were counted inserted for, so that a CI is inserted by one row only.
	doubt       int64
	insertedCIs map[string]bool
}

// markStep is how far ahead SentMark is saved: one run record write per markStep payloads.
const markStep = 1024

func newRunState(rec *record, m *transform.Map, now time.Time) *runState {
	return &runState{rec: rec, m: m, pending: map[int64]pending{}, wake: make(chan struct{}, 1), moved: now}
}

func (rs *runState) signal() {
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

// spawn runs rs once a slot is free (at most MaxRuns at once).
func (s *service) spawn(rs *runState) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx := s.runCtx()
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-s.slots }()
		s.execute(ctx, rs)
	}()
}

// execute stages and transforms a run to its end.
func (s *service) execute(ctx context.Context, rs *runState) {
	rs.mu.Lock()
	rs.rec.State = api.StateRunning
	rs.dirty = true
	id := rs.rec.ID
	staging := !rs.rec.StagingDone
	rs.mu.Unlock()
	var wg sync.WaitGroup
	if staging {
		wg.Add(1)
		go func() { defer wg.Done(); s.stage(ctx, rs) }()
	}
	err := s.transform(ctx, rs)
	wg.Wait()
	if ctx.Err() != nil {
		return // stopping: the run resumes at the next start
	}
	rs.saveMu.Lock()
	defer rs.saveMu.Unlock()
	rs.mu.Lock()
	t := s.now()
	rs.rec.Finished = &t
	rs.finished = true
	switch {
	case err != nil:
		rs.rec.State, rs.rec.Reason = api.StateFailed, err.Error()
	case rs.fatal != "":
		rs.rec.State, rs.rec.Reason = api.StateFailed, rs.fatal
	default:
		rs.rec.State = api.StateCompleted
	}
	c := *rs.rec
	rs.mu.Unlock()
	if err := s.put(ctx, &c); err != nil {
		s.log.Error("import run finished but not saved", "run", id, "err", err)
	}
	s.mu.Lock()
	delete(s.runs, id)
	s.mu.Unlock()
	s.log.Info("import run finished", "run", id, "state", c.State, "reason", c.Reason, "staged", c.Counters.Staged,
		"inserted", c.Counters.Inserted, "updated", c.Counters.Updated, "unchanged", c.Counters.Unchanged,
		"ignored", c.Counters.Ignored, "skipped", c.Counters.Skipped, "error", c.Counters.Error)
}

// runCtx is the service's context for runs (set by Run).
func (s *service) runCtx() context.Context { return s.ctx }

// recount reads back the outcomes a run recorded before a restart.
func (s *service) recount(ctx context.Context, rs *runState) error {
	rs.mu.Lock()
	id := rs.rec.ID
	rs.rec.Counters = api.Counters{Staged: rs.rec.Counters.Staged}
	rs.mu.Unlock()
	return s.scan(ctx, outcomeSubject(id, ">"), 0, func(m jetstream.Msg) bool {
		var o outcomeMsg
		if json.Unmarshal(m.Data(), &o) != nil {
			return true
		}
		rs.mu.Lock()
		if !rs.done.get(o.N) {
			rs.done.set(o.N)
			rs.rec.Counters.Add(o.Outcome, 1)
			if o.Outcome == api.OutcomeInserted && rs.insertedCIs != nil && o.CI != "" {
				rs.insertedCIs[o.CI] = true
			}
		}
		rs.mu.Unlock()
		return true
	})
}

// scan reads a subject of the IMPORTS stream from a sequence to its current end.
func (s *service) scan(ctx context.Context, subject string, from uint64, each func(jetstream.Msg) bool) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	cons, err := s.imp.OrderedConsumer(ctx, cfg)
	if err != nil {
		return err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return err
	}
	left := info.NumPending
	var seen uint64 // never hand a message on twice, whatever the consumer redelivers
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			if md, err := m.Metadata(); err == nil {
				if md.Sequence.Stream <= seen {
					continue
				}
				seen = md.Sequence.Stream
			}
			got++
			left--
			if !each(m) {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return err
		}
		if got == 0 {
			return fmt.Errorf("%s: %d messages announced but none came", subject, left)
		}
	}
	return nil
}

// stage reads the run's file into the import set, after the rows staged before a restart.
func (s *service) stage(ctx context.Context, rs *runState) {
	rs.mu.Lock()
	rec := *rs.rec
	rs.mu.Unlock()
	fail := func(format string, args ...any) {
		rs.mu.Lock()
		rs.fatal = fmt.Sprintf(format, args...)
		rs.rec.StagingDone = true
		rs.dirty = true
		rs.mu.Unlock()
		rs.signal()
	}
	staged := int64(0)
	var last *stagedRow
	if m, err := s.imp.GetLastMsgForSubject(ctx, rowsSubject(rec.Set)); err == nil {
		var r stagedRow
		if json.Unmarshal(m.Data, &r) == nil {
			staged, last = r.N, &r
		}
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		fail("staging: %v", err)
		return
	}
	if rec.Src != nil && rec.Src.Type != api.SourceFile {
		s.stageBridge(ctx, rs, rec, last, fail)
		return
	}
	var path string
	var err error
	if rec.Src != nil {
		path, err = s.spoolSiteFile(ctx, rec)
	} else {
		path, err = s.spool(ctx, rec)
	}
	if err != nil {
		if ctx.Err() == nil {
			if rec.Src != nil {
				fail("reading %s on site %s: %v", rec.Filename, rec.Src.Site, err)
			} else {
				fail("reading the uploaded file: %v", err)
			}
		}
		return
	}
	defer os.Remove(path)
	src, err := source.NewFileSource(path, withFormat(rec))
	if err != nil {
		fail("%s: %v", rec.Filename, err)
		return
	}
	defer src.Close()
	rs.mu.Lock()
	rs.rec.Header = src.Header()
	rs.mu.Unlock()
	cursor := ""
	if staged > 0 {
		cursor = strconv.FormatInt(staged, 10)
	}
	for {
		p, err := src.Page(ctx, cursor, 500)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// Rows read so far are staged and transformed; the run fails with the reason.
			if perr := s.publishRows(ctx, rs, p.Rows); perr == nil {
				fail("%s: %v", rec.Filename, err)
			} else {
				fail("staging: %v", perr)
			}
			return
		}
		if err := s.publishRows(ctx, rs, p.Rows); err != nil {
			if ctx.Err() == nil {
				fail("staging: %v", err)
			}
			return
		}
		cursor = p.Next
		if p.Done {
			break
		}
	}
	rs.saveMu.Lock()
	rs.mu.Lock()
	rs.rec.StagingDone = true
	c := *rs.rec
	rs.mu.Unlock()
	// Saved now, not by the save loop: the upload is deleted next.
	err = s.put(ctx, &c)
	rs.saveMu.Unlock()
	if err == nil && rec.Upload != "" && rec.UploadBucket == "" {
		_ = s.objs.Delete(context.WithoutCancel(ctx), rec.Upload) // a schedule's file stays for its next slot
	}
	rs.signal()
}

// publishRows stages rows and waits for the stream's acks; a page is sent again whole on a
// failure (ids deduplicate) so that no row is missing before a later one.
func (s *service) publishRows(ctx context.Context, rs *runState, rows []source.Row) error {
	if len(rows) == 0 {
		return nil
	}
	rs.mu.Lock()
	set := rs.rec.Set
	rs.mu.Unlock()
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.clock.After(time.Duration(attempt) * time.Second):
			}
		}
		futures := make([]jetstream.PubAckFuture, 0, len(rows))
		for _, r := range rows {
			b, merr := json.Marshal(stagedRow{N: r.N, Pos: r.Pos, Cols: r.Cols, Err: r.Err, Next: r.Next, Last: r.Last})
			if merr != nil {
				b, _ = json.Marshal(stagedRow{N: r.N, Pos: r.Pos, Err: "row not storable: " + merr.Error()})
			}
			msg := &nats.Msg{Subject: rowsSubject(set), Data: b, Header: nats.Header{}}
			msg.Header.Set(jetstream.MsgIDHeader, set+".r."+strconv.FormatInt(r.N, 10))
			f, perr := s.deps.JS.PublishMsgAsync(msg)
			if perr != nil {
				err = perr
				break
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case e := <-f.Err():
				err = e
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err == nil && len(futures) == len(rows) {
			rs.mu.Lock()
			rs.rec.Counters.Staged = rows[len(rows)-1].N
			rs.dirty = true
			rs.moved = s.clock.Now()
			rs.mu.Unlock()
			rs.signal()
			return nil
		}
	}
	return err
}

// spoolTimeout bounds copying an upload out of the object store.
const spoolTimeout = 6 * time.Hour

// spool copies the upload to a temporary file (XLSX needs random access; the others are
// read from it as a stream).
func (s *service) spool(ctx context.Context, rec record) (string, error) {
	objs := s.objs
	if rec.UploadBucket == api.ScheduleFiles {
		objs = s.files
	}
	// nats.go bounds a Get whose context has no deadline by its default timeout (5 s), and
	// that covers reading every chunk: a large upload failed with "nats: timeout". Reading
	// takes as long as the file needs; the run's context still cancels it.
	gctx, cancel := context.WithTimeout(ctx, spoolTimeout)
	defer cancel()
	obj, err := objs.Get(gctx, rec.Upload)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w (upload the file again)", rec.Upload, err)
	}
	defer obj.Close()
	f, err := os.CreateTemp(s.cfg.TempDir, "outpost-import-*"+filepath.Ext(rec.Filename))
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, obj); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func withFormat(rec record) api.FileOptions {
	o := rec.Options
	if f, err := source.DetectFormat(rec.Filename, o.Format); err == nil {
		o.Format = f
	}
	return o
}

func sourceFormat(filename string, o api.FileOptions) (string, error) {
	return source.DetectFormat(filename, o.Format)
}

// transform follows the import set as it is staged: each row's outcome is decided here or,
// for a payload, by the CMDB's receipt. It returns once every staged row has an outcome.
func (s *service) transform(ctx context.Context, rs *runState) error {
	rs.mu.Lock()
	set, id := rs.rec.Set, rs.rec.ID
	observed := rs.rec.Observed
	rs.mu.Unlock()
	cons, err := s.imp.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{rowsSubject(set)}})
	if err != nil {
		return fmt.Errorf("read the import set %s: %w", set, err)
	}
	var read int64 // ordinal of the last staged row read
	for {
		rs.mu.Lock()
		staged, stagingDone := rs.rec.Counters.Staged, rs.rec.StagingDone
		rs.mu.Unlock()
		if stagingDone && read >= staged {
			break
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(250*time.Millisecond))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the import set %s: %w", set, err)
		}
		got := 0
		// The rows' payloads go out asynchronously and their acks are awaited once per
		// fetch: waiting for each publish's ack would bound a run to one row per round trip.
		pubs := s.pub.Batch()
		for msg := range batch.Messages() {
			got++
			var row stagedRow
			if err := json.Unmarshal(msg.Data(), &row); err != nil {
				continue
			}
			read = row.N
			md, _ := msg.Metadata()
			seq := uint64(0)
			if md != nil {
				seq = md.Sequence.Stream
			}
			if err := s.transformRow(ctx, rs, id, observed, row, seq, pubs); err != nil {
				_ = pubs.Wait(context.WithoutCancel(ctx))
				return err
			}
		}
		if err := pubs.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("send rows to the CMDB: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the import set %s: %w", set, err)
		}
		if got == 0 && stagingDone {
			// Everything is staged yet rows are missing: the set aged out of IMPORTS.
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
				return fmt.Errorf("the import set %s holds %d rows of %d: staged rows are kept 7 days (IMPORTS); upload the file again",
					set, read, staged)
			}
		}
	}
	return s.awaitReceipts(ctx, rs)
}

func (s *service) transformRow(ctx context.Context, rs *runState, id string, observed time.Time, row stagedRow, seq uint64, pubs *bus.Batch) error {
	rs.mu.Lock()
	done := rs.done.get(row.N)
	rs.mu.Unlock()
	if done {
		return nil
	}
	if row.Err != "" {
		return s.record(ctx, rs, outcomeMsg{N: row.N, RowSeq: seq, Pos: row.Pos, Outcome: api.OutcomeError, Reason: row.Err})
	}
	res := rs.m.Apply(row.Cols, fmt.Sprintf("%s/%d", id, row.N), observed)
	if res.Outcome == api.OutcomeError && row.Pos.Sheet != "" && len(res.Columns) > 0 {
		rs.mu.Lock()
		for i, h := range rs.rec.Header {
			if h == res.Columns[0] {
				row.Pos.Cell = source.ColumnLetters(i+1) + strconv.FormatInt(row.Pos.Row, 10)
			}
		}
		rs.mu.Unlock()
	}
	if res.Payload == nil {
		return s.record(ctx, rs, outcomeMsg{N: row.N, RowSeq: seq, Pos: row.Pos, Outcome: res.Outcome, Reason: where(row.Pos) + res.Reason})
	}
	// Bounded: wait while InFlight payloads await their receipts.
	for {
		rs.mu.Lock()
		n := len(rs.pending)
		rs.mu.Unlock()
		if n < s.cfg.InFlight {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rs.wake:
		case <-s.clock.After(time.Second):
			if err := s.expire(ctx, rs); err != nil {
				return err
			}
		}
	}
	if err := s.markSent(ctx, rs, row.N); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	rs.mu.Lock()
	rs.pending[row.N] = pending{seq: seq, pos: row.Pos, sent: s.clock.Now()}
	rs.mu.Unlock()
	pid := payloadID(id, row.N, seq)
	if err := pubs.Add(ctx, bus.CMDBIngestSubjectFor(*res.Payload, s.cfg.Partitions), envelope.Meta{ID: pid, Run: id}, res.Payload); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("send row %d to the CMDB: %w", row.N, err)
	}
	return nil
}

// markSent saves the run's SentMark past row n before n's payload is sent (see record.SentMark).
func (s *service) markSent(ctx context.Context, rs *runState, n int64) error {
	rs.mu.Lock()
	ok := n <= rs.rec.SentMark
	rs.mu.Unlock()
	if ok {
		return nil
	}
	rs.saveMu.Lock()
	defer rs.saveMu.Unlock()
	rs.mu.Lock()
	rs.rec.SentMark = n + markStep
	c := *rs.rec
	rs.dirty = false
	rs.mu.Unlock()
	return s.put(ctx, &c)
}

// createdByRun tells whether the CMDB created ci from a payload of this run: its oldest
// history entry is the attribute set by the run's source at the run's observation time
// (every payload of a run carries the run's, fixed). A row sent before a restart whose
// receipt was lost is ingested again after it and reported unchanged: this tells that the
// CI is the row's own insert. A CI with a full page of history was not made by one row.
func (s *service) createdByRun(ctx context.Context, rec *record, ci string) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := cmdbapi.Get.Call(rctx, s.deps.NC, cmdbapi.IDRequest{ID: ci})
	if err != nil {
		return false, fmt.Errorf("CI %s's history (svc.cmdb.get): %w", ci, err)
	}
	if len(d.History) == 0 || len(d.History) >= 100 {
		return false, nil
	}
	first := d.History[len(d.History)-1]
	at := first.Time.Sub(rec.Observed)
	// The store keeps times to the microsecond at best.
	created := len(first.Old) == 0 || string(first.Old) == "null"
	return created && first.Source == rec.Source && at > -time.Millisecond && at < time.Millisecond, nil
}

// where prefixes a reason with the row's position (servers!C12, line 7, $.data[4]).
func where(p api.Position) string {
	if w := p.String(); w != "" {
		return w + ": "
	}
	return ""
}

// payloadID names a row's payload: the receipt carries it back.
func payloadID(run string, n int64, seq uint64) string {
	return "imp-" + run + "-" + strconv.FormatInt(n, 10) + "-" + strconv.FormatUint(seq, 10)
}

func parsePayloadID(id string) (run string, n int64, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(id, "imp-")
	if !found {
		return "", 0, 0, false
	}
	parts := strings.Split(rest, "-")
	if len(parts) != 3 {
		return "", 0, 0, false
	}
	n, err1 := strconv.ParseInt(parts[1], 10, 64)
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	return parts[0], n, seq, err1 == nil && err2 == nil
}

// record keeps a row's outcome (once) and counts it.
func (s *service) record(ctx context.Context, rs *runState, o outcomeMsg) error {
	rs.mu.Lock()
	if rs.done.get(o.N) {
		delete(rs.pending, o.N)
		rs.mu.Unlock()
		return nil
	}
	id := rs.rec.ID
	rs.mu.Unlock()
	b, _ := json.Marshal(o)
	msg := &nats.Msg{Subject: outcomeSubject(id, o.Outcome), Data: b, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, id+".o."+strconv.FormatInt(o.N, 10))
	if _, err := s.deps.JS.PublishMsg(ctx, msg); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("record row %d's outcome: %w", o.N, err)
	}
	rs.mu.Lock()
	if !rs.done.get(o.N) {
		rs.done.set(o.N)
		rs.rec.Counters.Add(o.Outcome, 1)
		rs.dirty = true
		if o.Outcome == api.OutcomeInserted && rs.insertedCIs != nil && o.CI != "" {
			rs.insertedCIs[o.CI] = true
		}
	}
	delete(rs.pending, o.N)
	rs.moved = s.clock.Now()
	rs.mu.Unlock()
	rs.signal()
	return nil
}

// awaitReceipts waits until every payload has its receipt, or ReceiptWait passed without
// one arriving: those rows are errors then.
func (s *service) awaitReceipts(ctx context.Context, rs *runState) error {
	for {
		rs.mu.Lock()
		n := len(rs.pending)
		rs.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-rs.wake:
		case <-s.clock.After(time.Second):
		}
		if err := s.expire(ctx, rs); err != nil {
			return err
		}
	}
}

// expire makes rows errors whose receipt has not come within ReceiptWait of the run's last
// progress: the CMDB refused (dead-lettered) their payload.
func (s *service) expire(ctx context.Context, rs *runState) error {
	rs.mu.Lock()
	if s.clock.Since(rs.moved) < s.cfg.ReceiptWait {
		rs.mu.Unlock()
		return nil
	}
	late := make(map[int64]pending, len(rs.pending))
	for n, p := range rs.pending {
		late[n] = p
	}
	rs.mu.Unlock()
	for n, p := range late {
		reason := fmt.Sprintf("%sno receipt from the CMDB within %s: it refused the payload (`outpost dlq ls --service cmdb` says why)", where(p.pos), s.cfg.ReceiptWait)
		if err := s.record(ctx, rs, outcomeMsg{N: n, RowSeq: p.seq, Pos: p.pos, Outcome: api.OutcomeError, Reason: reason}); err != nil {
			return err
		}
	}
	return nil
}

// handleRefusal makes a row an error when the CMDB dead-lettered its payload, with the
// CMDB's reason (the DLQ copy keeps the payload's headers: its id names the row).
func (s *service) handleRefusal(m *message.Message) error {
	h := bus.Header(m.Metadata)
	run, n, seq, ok := parsePayloadID(h.Get(envelope.HeaderID))
	if !ok {
		return nil
	}
	rs, err := s.readyRun(m.Context(), run)
	if rs == nil || err != nil {
		return err
	}
	o := outcomeMsg{N: n, RowSeq: seq, Outcome: api.OutcomeError}
	rs.mu.Lock()
	if p, ok := rs.pending[n]; ok {
		o.Pos = p.pos
	}
	rs.mu.Unlock()
	o.Reason = where(o.Pos) + "the CMDB refused the row's payload: " + h.Get(bus.HeaderDLQReason)
	return s.record(m.Context(), rs, o)
}

// readyRun is an active run able to take outcomes: nil when it finished or is not ours; an
// error (retried) while a resumed run still reads its outcomes back.
func (s *service) readyRun(ctx context.Context, run string) (*runState, error) {
	s.mu.Lock()
	rs := s.runs[run]
	s.mu.Unlock()
	if rs == nil || rs.ready == nil {
		return rs, nil
	}
	select {
	case <-rs.ready:
		return rs, nil
	case <-s.clock.After(5 * time.Second):
		return nil, fmt.Errorf("run %s is still reading back its outcomes", run)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// handleReceipt turns the CMDB's receipt for a row's payload into the row's outcome.
func (s *service) handleReceipt(ctx context.Context, meta envelope.Meta, in *envelope.Ingested) error {
	run, n, seq, ok := parsePayloadID(in.Payload)
	if !ok {
		return nil // another producer's
	}
	rs, err := s.readyRun(ctx, run)
	if rs == nil || err != nil {
		return err // nil, nil: finished (a late duplicate) or not ours
	}
	o := outcomeMsg{N: n, RowSeq: seq, Outcome: api.OutcomeError}
	rs.mu.Lock()
	if p, ok := rs.pending[n]; ok {
		o.Pos = p.pos
	}
	rs.mu.Unlock()
	item, ok := in.Refs[transform.RowRef]
	if !ok {
		// A CMDB without per-item outcomes: the row is the only item, or the first.
		switch {
		case in.Created > 0:
			item.Outcome = envelope.ItemCreated
		case in.Updated > 0:
			item.Outcome = envelope.ItemUpdated
		case in.Unchanged > 0:
			item.Outcome = envelope.ItemUnchanged
		default:
			item.Outcome = envelope.ItemConflict
		}
	}
	o.CI = item.CI
	switch item.Outcome {
	case envelope.ItemCreated:
		o.Outcome = api.OutcomeInserted
	case envelope.ItemUpdated:
		o.Outcome = api.OutcomeUpdated
	case envelope.ItemUnchanged:
		o.Outcome = api.OutcomeUnchanged
		rs.mu.Lock()
		inDoubt := n <= rs.doubt && item.CI != "" && !rs.insertedCIs[item.CI]
		rec := *rs.rec
		rs.mu.Unlock()
		if inDoubt {
			// Sent before the restart: the first ingest may have been this one's insert.
			mine, err := s.createdByRun(ctx, &rec, item.CI)
			if err != nil {
				return err // redelivered: the CMDB answers again shortly
			}
			rs.mu.Lock()
			claimed := mine && !rs.insertedCIs[item.CI]
			if claimed {
				o.Outcome = api.OutcomeInserted
				rs.insertedCIs[item.CI] = true // one row inserts a CI, even among concurrent receipts
			}
			rs.mu.Unlock()
			if claimed {
				if err := s.record(ctx, rs, o); err != nil {
					rs.mu.Lock()
					delete(rs.insertedCIs, item.CI)
					rs.mu.Unlock()
					return err
				}
				return nil
			}
		}
	case envelope.ItemConflict:
		o.Reason = where(o.Pos) + "identification conflict, not ingested (`outpost ci conflicts`): " + item.Reason
	default:
		o.Reason = where(o.Pos) + "not ingested by the CMDB: " + item.Reason
	}
	return s.record(ctx, rs, o)
}

// rows pages through a run's row outcomes, each with its staged columns.
func (s *service) rows(ctx context.Context, r api.RowsRequest) (api.RowsResponse, error) {
	rec, err := s.get(ctx, r.Run)
	if err != nil {
		return api.RowsResponse{}, err
	}
	subject := outcomeSubject(rec.ID, ">")
	if r.Outcome != "" {
		known := false
		for _, o := range api.Outcomes {
			known = known || o == r.Outcome
		}
		if !known {
			return api.RowsResponse{}, bus.Fail(errs.BadRequest, "outcome %q: want one of %s", r.Outcome, strings.Join(api.Outcomes, ", "))
		}
		subject = outcomeSubject(rec.ID, r.Outcome)
	}
	limit := r.Limit
	switch {
	case limit == 0:
		limit = 100
	case limit < 0 || limit > 1000:
		return api.RowsResponse{}, bus.Fail(errs.BadRequest, "limit %d: want 1 to 1000 (default 100)", limit)
	}
	from := uint64(1)
	if r.Cursor != "" {
		v, err := strconv.ParseUint(r.Cursor, 10, 64)
		if err != nil || v == 0 {
			return api.RowsResponse{}, bus.Fail(errs.BadRequest, "cursor %q is not one this API made: pass next_cursor unchanged", r.Cursor)
		}
		from = v
	}
	out := api.RowsResponse{Rows: []api.RowResult{}}
	var last uint64
	more := false
	err = s.scan(ctx, subject, from, func(m jetstream.Msg) bool {
		if len(out.Rows) == limit {
			more = true
			return false
		}
		var o outcomeMsg
		if json.Unmarshal(m.Data(), &o) != nil {
			return true
		}
		md, _ := m.Metadata()
		if md != nil {
			last = md.Sequence.Stream
		}
		rr := api.RowResult{N: o.N, Position: o.Pos, Outcome: o.Outcome, Reason: o.Reason, CI: o.CI}
		if o.RowSeq > 0 {
			if raw, err := s.imp.GetMsg(ctx, o.RowSeq); err == nil {
				var row stagedRow
				if json.Unmarshal(raw.Data, &row) == nil {
					cell := rr.Position.Cell // found by the transform, not the reader
					rr.Columns, rr.Position = row.Cols, row.Pos
					if rr.Position.Cell == "" {
						rr.Position.Cell = cell
					}
				}
			}
		}
		out.Rows = append(out.Rows, rr)
		return true
	})
	if err != nil {
		return api.RowsResponse{}, err
	}
	if more {
		out.NextCursor = strconv.FormatUint(last+1, 10)
	}
	return out, nil
}

// bitset marks the rows with an outcome.
type bitset []uint64

func (b bitset) get(n int64) bool {
	i := n / 64
	return n >= 0 && i < int64(len(b)) && b[i]&(1<<(n%64)) != 0
}

func (b *bitset) set(n int64) {
	i := n / 64
	for int64(len(*b)) <= i {
		*b = append(*b, 0)
	}
	(*b)[i] |= 1 << (n % 64)
}
