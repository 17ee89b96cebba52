package importer

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

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

// stagedPage is what a message of the import set holds: a page of rows, in order. (A set
// staged before pages holds one stagedRow per message; decodeStaged reads both.) One
// message per row cost the hub a JetStream store, an ack and a duplicate-window entry per
// row — the window alone held hundreds of MB while a 1 GB file was staged.
type stagedPage struct {
	Rows []stagedRow `json:"rows"`
}

// decodeStaged reads a message of the import set: its rows, in order.
func decodeStaged(data []byte) ([]stagedRow, error) {
	var m struct {
		stagedRow
		Rows []stagedRow `json:"rows"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if len(m.Rows) > 0 {
		return m.Rows, nil
	}
	if m.N > 0 {
		return []stagedRow{m.stagedRow}, nil
	}
	return nil, nil
}

// outcomePage is what a message of a run's outcomes holds: outcomes of one kind, in the
// order they were decided (one message per row before pages; decodeOutcomes reads both).
type outcomePage struct {
	Outcomes []outcomeMsg `json:"outcomes"`
}

func decodeOutcomes(data []byte) ([]outcomeMsg, error) {
	var m struct {
		outcomeMsg
		Outcomes []outcomeMsg `json:"outcomes"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if len(m.Outcomes) > 0 {
		return m.Outcomes, nil
	}
	if m.Outcome != "" {
		return []outcomeMsg{m.outcomeMsg}, nil
	}
	return nil, nil
}

// outcomeMsg is a row's outcome (in a page on import.<run>.out.<outcome>). RowSeq is the
// stream sequence of the staged page holding the row, to show its columns.
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
	// feed (nil: none) takes the pages this process stages to the transform as they are
	// acknowledged; set before staging starts, only by execute.
	feed *feed
}

// feed hands the pages a run stages to its transform in the same process, with their
// stream sequences, instead of the transform reading them back from IMPORTS. Reading them
// back cost the hub the server's delivery of every page and, worse, its message-block
// loads: a block read within 10 s of its last write stays cached (8 MiB a block) until
// then, and those buffers were most of the hub's peak heap while a 1 GB CSV was staged.
// The stream stays the record: a resumed run, a re-transform and `runs show` read it.
type feed struct {
	// base is the last row staged before this process's staging began: rows up to it are
	// read from the stream, the rest come through pages.
	base  int64
	pages chan fedPage
	done  chan struct{} // closed when the transform returns: staging feeds no more
}

// fedPage is a staged page: its stream sequence and the message's data, and its rows when
// they are what decoding the data gives (roundTrips): text columns need no decoding back.
type fedPage struct {
	seq  uint64
	data []byte
	rows []stagedRow // nil: decode data
}

// roundTrips tells whether decoding r's JSON gives r back, so that the transform of a row
// handed over in process is the transform of the row read back from the stream: its
// columns are text or nothing (JSON numbers come back as float64) and every string is
// valid UTF-8 (encoding/json replaces invalid bytes).
func roundTrips(r stagedRow) bool {
	for k, v := range r.Cols {
		if !utf8.ValidString(k) {
			return false
		}
		switch t := v.(type) {
		case nil:
		case string:
			if !utf8.ValidString(t) {
				return false
			}
		default:
			return false
		}
	}
	p := r.Pos
	for _, s := range [...]string{r.Err, r.Next, p.Sheet, p.Cell, p.Record, p.Page, p.Key} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// feedPages is how many staged pages wait for the transform at most (256 KiB each at
// most): staging runs no further ahead of the transform than this. The transform takes up
// to feedPages at once, waiting up to feedWait (real time, as a fetch's wait) for them.
const (
	feedPages = 8
	feedWait  = 250 * time.Millisecond
)

var errTransformStopped = errors.New("the transform stopped")

func newFeed(base int64) *feed {
	return &feed{base: base, pages: make(chan fedPage, feedPages), done: make(chan struct{})}
}

// send waits until the transform takes p (or stopped, or ctx ended).
func (f *feed) send(ctx context.Context, p fedPage) error {
	select {
	case f.pages <- p:
		return nil
	case <-f.done:
		return errTransformStopped
	case <-ctx.Done():
		return ctx.Err()
	}
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
	set := rs.rec.Set
	rs.mu.Unlock()
	var wg sync.WaitGroup
	if staging {
		// Where staging resumes, and so which rows the transform reads from the stream.
		last, err := s.lastStaged(ctx, set)
		switch {
		case ctx.Err() != nil:
			// stopping: the run resumes at the next start
		case err != nil:
			rs.mu.Lock()
			rs.fatal = fmt.Sprintf("staging: %v", err)
			rs.rec.StagingDone = true
			rs.dirty = true
			rs.mu.Unlock()
		default:
			base := int64(0)
			if last != nil {
				base = last.N
			}
			rs.feed = newFeed(base)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(rs.feed.pages)
				s.stage(ctx, rs, last)
			}()
		}
	}
	err := s.transform(ctx, rs)
	if rs.feed != nil {
		close(rs.feed.done)
	}
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

// recount reads back what a run did before a restart: its staged count from the import
// set and its outcomes. The counters are made from what the stream holds, not from the
// record, which is saved at most twice a second and so may predate the last pages staged:
// when those were the file's last rows, staging resumes past them, stages nothing more and
// would leave Staged at the record's older count (with every row done, the run completed
// "4,500 staged" of 6,000).
func (s *service) recount(ctx context.Context, rs *runState) error {
	rs.mu.Lock()
	id, set := rs.rec.ID, rs.rec.Set
	rs.mu.Unlock()
	last, err := s.lastStaged(ctx, set)
	if err != nil {
		return fmt.Errorf("the import set %s: %w", set, err)
	}
	rs.mu.Lock()
	staged := rs.rec.Counters.Staged
	if last != nil && last.N > staged {
		// Never lower: a set older than IMPORTS' max age is gone from the stream, and the
		// record's count, saved only after the stream acknowledged those rows, is right.
		staged = last.N
		rs.dirty = true
	}
	rs.rec.Counters = api.Counters{Staged: staged}
	rs.mu.Unlock()
	return s.scan(ctx, outcomeSubject(id, ">"), 0, func(m jetstream.Msg) bool {
		outs, err := decodeOutcomes(m.Data())
		if err != nil {
			return true
		}
		rs.mu.Lock()
		for _, o := range outs {
			if !rs.done.get(o.N) {
				rs.done.set(o.N)
				rs.rec.Counters.Add(o.Outcome, 1)
				if o.Outcome == api.OutcomeInserted && rs.insertedCIs != nil && o.CI != "" {
					rs.insertedCIs[o.CI] = true
				}
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

// stage reads the run's file into the import set, after the rows staged before a restart
// (last: the last of them, nil if none).
func (s *service) stage(ctx context.Context, rs *runState, last *stagedRow) {
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
	if last != nil {
		staged = last.N
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

// lastStaged is the last row of an import set in the stream (nil: none staged, or the set
// aged out of IMPORTS).
func (s *service) lastStaged(ctx context.Context, set string) (*stagedRow, error) {
	m, err := s.imp.GetLastMsgForSubject(ctx, rowsSubject(set))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rows, err := decodeStaged(m.Data)
	if err != nil || len(rows) == 0 {
		return nil, nil // an unreadable message names no row
	}
	return &rows[len(rows)-1], nil
}

// publishRows stages rows, in pages of at most pageRows rows and about pageBytes, and
// waits for the stream's acks; the rows are sent again whole on a failure (page ids
// deduplicate) so that no row is missing before a later one. Once acknowledged, the pages
// go to the run's transform (rs.feed) with their stream sequences.
func (s *service) publishRows(ctx context.Context, rs *runState, rows []source.Row) error {
	if len(rows) == 0 {
		return nil
	}
	rs.mu.Lock()
	set := rs.rec.Set
	rs.mu.Unlock()
	var msgs []*nats.Msg
	var fed []fedPage // the pages for the feed, rows kept when they round-trip
	page := make([][]byte, 0, min(len(rows), pageRows))
	var pageRowsKept []stagedRow
	exact := true
	first, size := int64(0), 0
	cut := func(last int64) {
		msg := &nats.Msg{Subject: rowsSubject(set), Data: joinPage(`{"rows":[`, page, size), Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, set+".r."+strconv.FormatInt(first, 10)+"-"+strconv.FormatInt(last, 10))
		msgs = append(msgs, msg)
		f := fedPage{data: msg.Data}
		if exact {
			f.rows = pageRowsKept
		}
		fed = append(fed, f)
		page, size, pageRowsKept, exact = page[:0], 0, nil, true
	}
	for i, r := range rows {
		sr := stagedRow{N: r.N, Pos: r.Pos, Cols: r.Cols, Err: r.Err, Next: r.Next, Last: r.Last}
		b, merr := marshalStagedRow(&sr)
		if merr != nil {
			b, _ = json.Marshal(stagedRow{N: r.N, Pos: r.Pos, Err: "row not storable: " + merr.Error()})
		}
		if len(page) > 0 && size+len(b) > pageBytes {
			cut(rows[i-1].N)
		}
		if len(page) == 0 {
			first = r.N
		}
		page = append(page, b)
		size += len(b)
		if rs.feed != nil && exact {
			if merr != nil || !roundTrips(sr) {
				exact = false
			} else {
				if len(sr.Cols) == 0 {
					sr.Cols = nil // omitted when empty: decoded as none
				}
				pageRowsKept = append(pageRowsKept, sr)
			}
		}
		if len(page) == pageRows {
			cut(r.N)
		}
	}
	if len(page) > 0 {
		cut(rows[len(rows)-1].N)
	}
	var err error
	seqs := make([]uint64, len(msgs))
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.clock.After(time.Duration(attempt) * time.Second):
			}
		}
		err = nil
		futures := make([]jetstream.PubAckFuture, 0, len(msgs))
		for _, msg := range msgs {
			f, perr := s.deps.JS.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second))
			if perr != nil {
				err = perr
				break
			}
			futures = append(futures, f)
		}
		for i, f := range futures {
			select {
			case ack := <-f.Ok():
				seqs[i] = ack.Sequence // a duplicate's ack names the page's first copy
			case e := <-f.Err():
				err = e
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err == nil && len(futures) == len(msgs) {
			rs.mu.Lock()
			rs.rec.Counters.Staged = rows[len(rows)-1].N
			rs.dirty = true
			rs.moved = s.clock.Now()
			rs.mu.Unlock()
			rs.signal()
			if rs.feed != nil {
				for i, f := range fed {
					f.seq = seqs[i]
					if err := rs.feed.send(ctx, f); err != nil {
						return err
					}
				}
			}
			return nil
		}
	}
	return err
}

// joinPage is a page message: open, the items comma-separated, "]}". Each item is already
// compact JSON: encoding them again as json.RawMessage would only copy and re-validate them.
func joinPage(open string, items [][]byte, size int) []byte {
	b := make([]byte, 0, len(open)+size+len(items)+2)
	b = append(b, open...)
	for i, it := range items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
	}
	return append(b, "]}"...)
}

// A staged page holds at most pageRows rows, and no more than about pageBytes unless one
// row alone is larger (the server's limit, 1 MiB by default, still applies to it).
const (
	pageRows  = 256
	pageBytes = 256 << 10
)

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
	if _, err := objs.GetInfo(gctx, rec.Upload); err != nil {
		return "", fmt.Errorf("upload %s: %w (upload the file again)", rec.Upload, err)
	}
	f, err := os.CreateTemp(s.cfg.TempDir, "outpost-import-*"+filepath.Ext(rec.Filename))
	if err != nil {
		return "", err
	}
	// Buffered: chunks are 128 KiB, the file system likes larger writes no less.
	bw := bufio.NewWriterSize(f, 1<<20)
	err = readObject(gctx, s.deps.JS, objs, rec.Upload, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", fmt.Errorf("upload %s: %w", rec.Upload, err)
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
// The rows staged before this process (a resumed run, a re-transform) are read from the
// stream; those this process stages come through the run's feed.
func (s *service) transform(ctx context.Context, rs *runState) error {
	rs.mu.Lock()
	set := rs.rec.Set
	observed := rs.rec.Observed
	upTo := rs.rec.Counters.Staged // no feed: staging is done (or failed) and this is all
	rs.mu.Unlock()
	if rs.feed != nil {
		upTo = rs.feed.base
	}
	if upTo > 0 {
		if err := s.transformStaged(ctx, rs, set, observed, upTo); err != nil || ctx.Err() != nil {
			return err
		}
	}
	if rs.feed != nil {
		pages := make([]fedPage, 0, feedPages)
		for open := true; open; {
			select {
			case <-ctx.Done():
				return nil
			case p, ok := <-rs.feed.pages:
				if !ok {
					open = false
					break
				}
				pages = append(pages[:0], p)
			}
			// More pages, up to feedPages or for feedWait (what a fetch from the stream
			// gathered): their rows share CMDB payloads — one page's rows spread over every
			// partition would make payloads of a few rows — and one wait for acks.
			if open && len(pages) < feedPages {
				wait := time.NewTimer(feedWait)
			gather:
				for len(pages) < feedPages {
					select {
					case p, ok := <-rs.feed.pages:
						if !ok {
							open = false
							break gather
						}
						pages = append(pages, p)
					case <-wait.C:
						break gather
					case <-ctx.Done():
						wait.Stop()
						return nil
					}
				}
				wait.Stop()
			}
			if len(pages) == 0 {
				continue
			}
			if _, err := s.transformPages(ctx, rs, observed, pages, 0); err != nil || ctx.Err() != nil {
				return err
			}
			pages = pages[:0]
		}
	}
	return s.awaitReceipts(ctx, rs)
}

// transformStaged transforms the rows of the import set up to row upTo, read from the stream.
func (s *service) transformStaged(ctx context.Context, rs *runState, set string, observed time.Time, upTo int64) error {
	cons, err := s.imp.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{rowsSubject(set)}})
	if err != nil {
		return fmt.Errorf("read the import set %s: %w", set, err)
	}
	var read int64 // ordinal of the last staged row read
	pages := make([]fedPage, 0, feedPages)
	for read < upTo {
		batch, err := cons.Fetch(feedPages, jetstream.FetchMaxWait(250*time.Millisecond)) // pages of up to 256 rows
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read the import set %s: %w", set, err)
		}
		pages = pages[:0]
		for msg := range batch.Messages() {
			seq := uint64(0)
			if md, _ := msg.Metadata(); md != nil {
				seq = md.Sequence.Stream
			}
			pages = append(pages, fedPage{seq: seq, data: msg.Data()})
		}
		if ctx.Err() != nil {
			return nil
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read the import set %s: %w", set, err)
		}
		if len(pages) == 0 {
			// Every row up to upTo is staged yet rows are missing: the set aged out of IMPORTS.
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
				return fmt.Errorf("the import set %s holds %d rows of %d: staged rows are kept 7 days (IMPORTS); upload the file again",
					set, read, upTo)
			}
			continue
		}
		last, err := s.transformPages(ctx, rs, observed, pages, upTo)
		if err != nil {
			return err
		}
		read = max(read, last)
	}
	return nil
}

// transformPages transforms staged pages' rows (those after upTo left out, when upTo > 0:
// they come through the feed), sends their payloads and waits for the sends' acks: rows
// bound for one CMDB partition travel together, RowsPerPayload to a payload. last is the
// highest row number the pages hold.
func (s *service) transformPages(ctx context.Context, rs *runState, observed time.Time, pages []fedPage, upTo int64) (last int64, err error) {
	rs.mu.Lock()
	id := rs.rec.ID
	rs.mu.Unlock()
	// The rows' payloads go out asynchronously and their acks are awaited once per call:
	// waiting for each publish's ack would bound a run to one row per round trip.
	pubs := s.pub.Batch()
	out := newOutgoing(s, rs, id, pubs)
	for _, p := range pages {
		rows := p.rows
		if rows == nil {
			var err error
			if rows, err = decodeStaged(p.data); err != nil {
				continue
			}
		}
		if len(rows) > 0 {
			last = max(last, rows[len(rows)-1].N)
		}
		for _, row := range rows {
			if upTo > 0 && row.N > upTo {
				break
			}
			if err := s.transformRow(ctx, rs, observed, row, p.seq, out); err != nil {
				_ = pubs.Wait(context.WithoutCancel(ctx))
				return last, err
			}
		}
	}
	if err := out.flushAll(ctx); err != nil {
		_ = pubs.Wait(context.WithoutCancel(ctx))
		if ctx.Err() != nil {
			return last, nil
		}
		return last, err
	}
	if err := pubs.Wait(ctx); err != nil {
		if ctx.Err() != nil {
			return last, nil
		}
		return last, fmt.Errorf("send rows to the CMDB: %w", err)
	}
	return last, nil
}

func (s *service) transformRow(ctx context.Context, rs *runState, observed time.Time, row stagedRow, seq uint64, out *outgoing) error {
	rs.mu.Lock()
	done := rs.done.get(row.N)
	id := rs.rec.ID
	rs.mu.Unlock()
	if done {
		return nil
	}
	if row.Err != "" {
		out.decided = append(out.decided, outcomeMsg{N: row.N, RowSeq: seq, Pos: row.Pos, Outcome: api.OutcomeError, Reason: row.Err})
		return nil
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
		out.decided = append(out.decided, outcomeMsg{N: row.N, RowSeq: seq, Pos: row.Pos, Outcome: res.Outcome, Reason: where(row.Pos) + res.Reason})
		return nil
	}
	// Bounded: wait while InFlight rows await their receipts. The rows gathered but not yet
	// sent go first, or their receipts would be what the wait waits for.
	for {
		rs.mu.Lock()
		n := len(rs.pending)
		rs.mu.Unlock()
		if n < s.cfg.InFlight {
			break
		}
		if err := out.flushAll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
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
	rs.mu.Lock()
	rs.pending[row.N] = pending{seq: seq, pos: row.Pos, sent: s.clock.Now()}
	rs.mu.Unlock()
	if err := out.add(ctx, row.N, seq, res.Payload); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return nil
}

// outgoing gathers the payloads of a fetch's rows into one payload per CMDB partition (a
// device's payloads keep their partition, so one device is still reconciled by one
// partition at a time) and sends each once it holds RowsPerPayload rows, or at the end of
// the fetch.
type outgoing struct {
	s      *service
	rs     *runState
	run    string
	pubs   *bus.Batch
	groups map[int]*rowGroup
	// decided are the outcomes of the fetch's rows that need no CMDB (ignored, skipped,
	// error): recorded together at the end of the fetch, not one publish each.
	decided []outcomeMsg
}

// rowGroup is the rows of one payload being gathered.
type rowGroup struct {
	rows []groupedRow
	keys map[string]bool // the rows' identities: a second row of one device waits for the next payload
}

type groupedRow struct {
	n   int64
	seq uint64
	p   *envelope.CIPayload
}

func newOutgoing(s *service, rs *runState, run string, pubs *bus.Batch) *outgoing {
	return &outgoing{s: s, rs: rs, run: run, pubs: pubs, groups: map[int]*rowGroup{}}
}

func (o *outgoing) add(ctx context.Context, n int64, seq uint64, p *envelope.CIPayload) error {
	part := bus.CMDBPartition(*p, o.s.cfg.Partitions)
	key := bus.CMDBPartitionKey(*p)
	g := o.groups[part]
	if g != nil && key != "" && g.keys[key] {
		// Two rows of one device in one payload would both read as inserting it; in
		// payloads of their own, the second is the update it is.
		if err := o.flush(ctx, part); err != nil {
			return err
		}
		g = nil
	}
	if g == nil {
		g = &rowGroup{keys: map[string]bool{}}
		o.groups[part] = g
	}
	g.rows = append(g.rows, groupedRow{n: n, seq: seq, p: p})
	if key != "" {
		g.keys[key] = true
	}
	if len(g.rows) >= o.s.cfg.RowsPerPayload {
		return o.flush(ctx, part)
	}
	return nil
}

func (o *outgoing) flushAll(ctx context.Context) error {
	if len(o.decided) > 0 {
		if err := o.s.recordAll(ctx, o.rs, o.decided); err != nil {
			return err
		}
		o.decided = o.decided[:0]
	}
	for part := range o.groups {
		if err := o.flush(ctx, part); err != nil {
			return err
		}
	}
	return nil
}

// flush sends one partition's gathered rows: a lone row as the one-row payload it is, more
// as one payload whose refs name each row (rowRef).
func (o *outgoing) flush(ctx context.Context, part int) error {
	g := o.groups[part]
	delete(o.groups, part)
	if g == nil || len(g.rows) == 0 {
		return nil
	}
	last := int64(0)
	for _, r := range g.rows {
		last = max(last, r.n)
	}
	if err := o.s.markSent(ctx, o.rs, last); err != nil {
		return err
	}
	var pid string
	var p *envelope.CIPayload
	if len(g.rows) == 1 {
		pid, p = payloadID(o.run, g.rows[0].n, g.rows[0].seq), g.rows[0].p
	} else {
		pid, p = multiPayloadID(o.run, g.rows[0].n, g.rows[0].seq, len(g.rows)), mergeRows(g.rows)
	}
	if err := o.pubs.Add(ctx, bus.CMDBIngestSubject(part), envelope.Meta{ID: pid, Run: o.run}, payloadBody(p)); err != nil {
		return fmt.Errorf("send rows %d… to the CMDB: %w", g.rows[0].n, err)
	}
	return nil
}

// rowRef is the ref of row n's item ref in a payload of many rows: "<n>:<seq>:<ref>" (the
// staged row's number and stream sequence, and its ref in the row's own payload), so that a
// receipt alone — after a restart, with nothing in memory — names each row and its staged
// columns.
func rowRef(n int64, seq uint64, ref string) string {
	return strconv.FormatInt(n, 10) + ":" + strconv.FormatUint(seq, 10) + ":" + ref
}

func parseRowRef(r string) (n int64, seq uint64, ref string, ok bool) {
	a, rest, ok1 := strings.Cut(r, ":")
	b, ref, ok2 := strings.Cut(rest, ":")
	if !ok1 || !ok2 {
		return 0, 0, "", false
	}
	n, err1 := strconv.ParseInt(a, 10, 64)
	seq, err2 := strconv.ParseUint(b, 10, 64)
	return n, seq, ref, err1 == nil && err2 == nil
}

// mergeRows makes one payload of several rows' payloads (same source and observed time: the
// run's), each item and relation under its row's refs.
func mergeRows(rows []groupedRow) *envelope.CIPayload {
	n := 0
	for _, r := range rows {
		n += len(r.p.Items)
	}
	out := &envelope.CIPayload{Source: rows[0].p.Source, Observed: rows[0].p.Observed, Items: make([]envelope.CIItem, 0, n)}
	for _, r := range rows {
		for _, it := range r.p.Items {
			it.Ref = rowRef(r.n, r.seq, it.Ref)
			if it.Parent != "" {
				it.Parent = rowRef(r.n, r.seq, it.Parent)
			}
			out.Items = append(out.Items, it)
		}
		for _, rel := range r.p.Relations {
			rel.From, rel.To = rowRef(r.n, r.seq, rel.From), rowRef(r.n, r.seq, rel.To)
			out.Relations = append(out.Relations, rel)
		}
	}
	return out
}

// splitRows undoes mergeRows: each row's own payload, by row number, with its sequence.
func splitRows(p *envelope.CIPayload) map[int64]groupedRow {
	out := map[int64]groupedRow{}
	get := func(n int64, seq uint64) groupedRow {
		r, ok := out[n]
		if !ok {
			r = groupedRow{n: n, seq: seq, p: &envelope.CIPayload{Source: p.Source, Observed: p.Observed}}
			out[n] = r
		}
		return r
	}
	for _, it := range p.Items {
		n, seq, ref, ok := parseRowRef(it.Ref)
		if !ok {
			continue
		}
		r := get(n, seq)
		it.Ref = ref
		if _, _, pref, ok := parseRowRef(it.Parent); ok {
			it.Parent = pref
		}
		r.p.Items = append(r.p.Items, it)
	}
	for _, rel := range p.Relations {
		n, seq, from, ok1 := parseRowRef(rel.From)
		_, _, to, ok2 := parseRowRef(rel.To)
		if !ok1 || !ok2 {
			continue
		}
		r := get(n, seq)
		rel.From, rel.To = from, to
		r.p.Relations = append(r.p.Relations, rel)
	}
	return out
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

// multiPayloadID names a payload of rows rows, the first n: each row's outcome is in the
// receipt under its rowRef.
func multiPayloadID(run string, n int64, seq uint64, rows int) string {
	return payloadID(run, n, seq) + "-m" + strconv.Itoa(rows)
}

// parsePayloadID reads a payload id: multi says it holds many rows (n, seq: its first).
func parsePayloadID(id string) (run string, n int64, seq uint64, multi, ok bool) {
	rest, found := strings.CutPrefix(id, "imp-")
	if !found {
		return "", 0, 0, false, false
	}
	parts := strings.Split(rest, "-")
	switch {
	case len(parts) == 4 && strings.HasPrefix(parts[3], "m"):
		multi = true
	case len(parts) != 3:
		return "", 0, 0, false, false
	}
	n, err1 := strconv.ParseInt(parts[1], 10, 64)
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	return parts[0], n, seq, multi, err1 == nil && err2 == nil
}

// record keeps a row's outcome (once) and counts it.
func (s *service) record(ctx context.Context, rs *runState, o outcomeMsg) error {
	return s.recordAll(ctx, rs, []outcomeMsg{o})
}

// recordAll keeps rows' outcomes (each once) and counts them: published together, their
// acks awaited once (a payload's receipt answers for many rows).
func (s *service) recordAll(ctx context.Context, rs *runState, outs []outcomeMsg) error {
	rs.mu.Lock()
	id := rs.rec.ID
	todo := outs[:0:0]
	for _, o := range outs {
		if rs.done.get(o.N) {
			delete(rs.pending, o.N)
			continue
		}
		todo = append(todo, o)
	}
	rs.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	msgs := outcomeNATSMsgs(id, todo)
	var err error
	if len(msgs) == 1 {
		_, err = s.deps.JS.PublishMsg(ctx, msgs[0])
	} else {
		futures := make([]jetstream.PubAckFuture, 0, len(msgs))
		for _, m := range msgs {
			f, perr := s.deps.JS.PublishMsgAsync(m, jetstream.WithStallWait(5*time.Second))
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
				err = ctx.Err()
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("record the outcome of %d rows from row %d: %w", len(todo), todo[0].N, err)
	}
	rs.mu.Lock()
	for _, o := range todo {
		if !rs.done.get(o.N) {
			rs.done.set(o.N)
			rs.rec.Counters.Add(o.Outcome, 1)
			rs.dirty = true
			if o.Outcome == api.OutcomeInserted && rs.insertedCIs != nil && o.CI != "" {
				rs.insertedCIs[o.CI] = true
			}
		}
		delete(rs.pending, o.N)
	}
	rs.moved = s.clock.Now()
	rs.mu.Unlock()
	rs.signal()
	return nil
}

// outcomeNATSMsgs are the messages of rows' outcomes: a page per outcome kind (at most
// pageRows outcomes, about pageBytes). A page's id names its rows, so the same outcomes
// recorded twice at once (a redelivered receipt) are a duplicate the stream drops; readers
// count a row once whatever they read.
func outcomeNATSMsgs(run string, outs []outcomeMsg) []*nats.Msg {
	byKind := map[string][]outcomeMsg{}
	var kinds []string
	for _, o := range outs {
		if _, ok := byKind[o.Outcome]; !ok {
			kinds = append(kinds, o.Outcome)
		}
		byKind[o.Outcome] = append(byKind[o.Outcome], o)
	}
	var msgs []*nats.Msg
	for _, kind := range kinds {
		page := make([][]byte, 0, min(len(byKind[kind]), pageRows))
		var ns []int64
		size := 0
		cut := func() {
			msg := &nats.Msg{Subject: outcomeSubject(run, kind), Data: joinPage(`{"outcomes":[`, page, size), Header: nats.Header{}}
			id := run + ".o." + strconv.FormatInt(ns[0], 10)
			if len(ns) > 1 {
				id += "-" + strconv.FormatInt(ns[len(ns)-1], 10) + "-" + strconv.Itoa(len(ns))
			}
			msg.Header.Set(jetstream.MsgIDHeader, id)
			msgs = append(msgs, msg)
			page, ns, size = page[:0], nil, 0
		}
		for _, o := range byKind[kind] {
			b := marshalOutcome(&o)
			if len(page) > 0 && size+len(b) > pageBytes {
				cut()
			}
			page, ns = append(page, b), append(ns, o.N)
			size += len(b)
			if len(page) == pageRows {
				cut()
			}
		}
		if len(page) > 0 {
			cut()
		}
	}
	return msgs
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
// CMDB's reason (the DLQ copy keeps the payload's headers: its id names the row). A payload
// of many rows is refused whole for any one of them: its rows are sent again, each in a
// payload of its own, so that only the rows at fault are errors, each with its reason.
func (s *service) handleRefusal(m *message.Message) error {
	h := bus.Header(m.Metadata)
	run, n, seq, multi, ok := parsePayloadID(h.Get(envelope.HeaderID))
	if !ok {
		return nil
	}
	rs, err := s.readyRun(m.Context(), run)
	if rs == nil || err != nil {
		return err
	}
	if multi {
		return s.resendAlone(m, rs, run)
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

// resendAlone sends the rows of a refused payload of many rows again, one payload each.
func (s *service) resendAlone(m *message.Message, rs *runState, run string) error {
	_, p, err := envelope.DecodeIntoWith[*envelope.CIPayload](m.Metadata.Get, m.Payload)
	if err != nil {
		s.log.Warn("a refused import payload does not decode: its rows get no receipt and become errors after the receipt wait",
			"run", run, "payload", bus.Header(m.Metadata).Get(envelope.HeaderID), "err", err)
		return nil
	}
	pubs := s.pub.Batch()
	for _, r := range splitRows(p) {
		rs.mu.Lock()
		done := rs.done.get(r.n)
		if !done {
			if _, ok := rs.pending[r.n]; !ok {
				rs.pending[r.n] = pending{seq: r.seq, sent: s.clock.Now()}
			}
		}
		rs.moved = s.clock.Now()
		rs.mu.Unlock()
		if done {
			continue
		}
		subject := bus.CMDBIngestSubjectFor(*r.p, s.cfg.Partitions)
		if err := pubs.Add(m.Context(), subject, envelope.Meta{ID: payloadID(run, r.n, r.seq), Run: run}, payloadBody(r.p)); err != nil {
			_ = pubs.Wait(context.WithoutCancel(m.Context()))
			return err
		}
	}
	return pubs.Wait(m.Context())
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

// handleReceipt turns the CMDB's receipt for a payload into its rows' outcomes.
func (s *service) handleReceipt(ctx context.Context, meta envelope.Meta, in *envelope.Ingested) error {
	run, n, seq, multi, ok := parsePayloadID(in.Payload)
	if !ok {
		return nil // another producer's
	}
	rs, err := s.readyRun(ctx, run)
	if rs == nil || err != nil {
		return err // nil, nil: finished (a late duplicate) or not ours
	}
	if !multi {
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
		return s.receiveRows(ctx, rs, []rowReceipt{{n: n, seq: seq, item: item}})
	}
	rows := make([]rowReceipt, 0, len(in.Refs))
	for ref, item := range in.Refs {
		n, seq, own, ok := parseRowRef(ref)
		if ok && own == transform.RowRef {
			rows = append(rows, rowReceipt{n: n, seq: seq, item: item})
		}
	}
	slices.SortFunc(rows, func(a, b rowReceipt) int { return cmp.Compare(a.n, b.n) })
	return s.receiveRows(ctx, rs, rows)
}

// rowReceipt is what the CMDB made of one row's CI.
type rowReceipt struct {
	n    int64
	seq  uint64
	item envelope.ItemOutcome
}

// receiveRows records the outcomes of rows the CMDB answered for.
func (s *service) receiveRows(ctx context.Context, rs *runState, rows []rowReceipt) error {
	outs := make([]outcomeMsg, 0, len(rows))
	var claimed []string // CIs claimed as this run's inserts here: released if recording fails
	for _, r := range rows {
		o := outcomeMsg{N: r.n, RowSeq: r.seq, Outcome: api.OutcomeError, CI: r.item.CI}
		rs.mu.Lock()
		if p, ok := rs.pending[r.n]; ok {
			o.Pos = p.pos
		}
		rs.mu.Unlock()
		switch r.item.Outcome {
		case envelope.ItemCreated:
			o.Outcome = api.OutcomeInserted
		case envelope.ItemUpdated:
			o.Outcome = api.OutcomeUpdated
		case envelope.ItemUnchanged:
			o.Outcome = api.OutcomeUnchanged
			rs.mu.Lock()
			inDoubt := r.n <= rs.doubt && r.item.CI != "" && !rs.insertedCIs[r.item.CI]
			rec := *rs.rec
			rs.mu.Unlock()
			if inDoubt {
				// Sent before the restart: the first ingest may have been this one's insert.
				mine, err := s.createdByRun(ctx, &rec, r.item.CI)
				if err != nil {
					s.release(rs, claimed)
					return err // redelivered: the CMDB answers again shortly
				}
				rs.mu.Lock()
				if mine && !rs.insertedCIs[r.item.CI] {
					o.Outcome = api.OutcomeInserted
					rs.insertedCIs[r.item.CI] = true // one row inserts a CI, even among concurrent receipts
					claimed = append(claimed, r.item.CI)
				}
				rs.mu.Unlock()
			}
		case envelope.ItemConflict:
			o.Reason = where(o.Pos) + "identification conflict, not ingested (`outpost ci conflicts`): " + r.item.Reason
		default:
			o.Reason = where(o.Pos) + "not ingested by the CMDB: " + r.item.Reason
		}
		outs = append(outs, o)
	}
	if err := s.recordAll(ctx, rs, outs); err != nil {
		s.release(rs, claimed)
		return err
	}
	return nil
}

// release gives back CIs claimed as inserted by rows whose outcomes were not recorded.
func (s *service) release(rs *runState, cis []string) {
	if len(cis) == 0 {
		return
	}
	rs.mu.Lock()
	for _, ci := range cis {
		delete(rs.insertedCIs, ci)
	}
	rs.mu.Unlock()
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
	// A cursor is the stream sequence of an outcome page, and the index in it of the next
	// outcome ("123.45"); a bare sequence is a page's start (cursors made before pages).
	from, skip := uint64(1), 0
	if r.Cursor != "" {
		seqText, idxText, hasIdx := strings.Cut(r.Cursor, ".")
		v, err := strconv.ParseUint(seqText, 10, 64)
		i := 0
		if hasIdx && err == nil {
			i, err = strconv.Atoi(idxText)
		}
		if err != nil || v == 0 || i < 0 {
			return api.RowsResponse{}, bus.Fail(errs.BadRequest, "cursor %q is not one this API made: pass next_cursor unchanged", r.Cursor)
		}
		from, skip = v, i
	}
	out := api.RowsResponse{Rows: []api.RowResult{}}
	pages := map[uint64][]stagedRow{} // staged pages read for their rows' columns
	err = s.scan(ctx, subject, from, func(m jetstream.Msg) bool {
		outs, err := decodeOutcomes(m.Data())
		if err != nil {
			return true
		}
		var seq uint64
		if md, _ := m.Metadata(); md != nil {
			seq = md.Sequence.Stream
		}
		start := 0
		if seq == from {
			start = skip
		}
		for i := start; i < len(outs); i++ {
			if len(out.Rows) == limit {
				out.NextCursor = strconv.FormatUint(seq, 10) + "." + strconv.Itoa(i)
				return false
			}
			o := outs[i]
			rr := api.RowResult{N: o.N, Position: o.Pos, Outcome: o.Outcome, Reason: o.Reason, CI: o.CI}
			if row, ok := s.stagedRowAt(ctx, pages, o.RowSeq, o.N); ok {
				cell := rr.Position.Cell // found by the transform, not the reader
				rr.Columns, rr.Position = row.Cols, row.Pos
				if rr.Position.Cell == "" {
					rr.Position.Cell = cell
				}
			}
			out.Rows = append(out.Rows, rr)
		}
		return true // at the limit, the next message (if any) makes the cursor
	})
	if err != nil {
		return api.RowsResponse{}, err
	}
	return out, nil
}

// stagedRowAt is row n of the staged page at seq (pages caches the pages read).
func (s *service) stagedRowAt(ctx context.Context, pages map[uint64][]stagedRow, seq uint64, n int64) (stagedRow, bool) {
	if seq == 0 {
		return stagedRow{}, false
	}
	rows, ok := pages[seq]
	if !ok {
		if raw, err := s.imp.GetMsg(ctx, seq); err == nil {
			rows, _ = decodeStaged(raw.Data)
		}
		pages[seq] = rows
	}
	for _, r := range rows {
		if r.N == n {
			return r, true
		}
	}
	return stagedRow{}, false
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
