package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/clock"
)

// reference is the fixed time the tests' fake clocks start at.
var reference = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func testRecord(probe string) ExecutedRecord {
	return ExecutedRecord{Probe: probe, Attempt: 2, Results: 3, Subject: "result.orchestration.lab.http_request.br-1",
		Header: nats.Header{nats.MsgIdHdr: []string{probe + "-2-2"}, "Ce-Type": []string{"outpost.result.v1"}, "Multi": []string{"a", ""}},
		Data:   []byte(`{"status":"ok"}`), Finished: reference.Add(-time.Second)}
}

func sameRecord(got *ExecutedRecord, want ExecutedRecord) bool {
	if got == nil || got.Probe != want.Probe || got.Attempt != want.Attempt || got.Results != want.Results || got.Subject != want.Subject ||
		!bytes.Equal(got.Data, want.Data) || !got.Finished.Equal(want.Finished) || len(got.Header) != len(want.Header) {
		return false
	}
	for k, v := range want.Header {
		if len(got.Header[k]) != len(v) {
			return false
		}
		for i := range v {
			if got.Header[k][i] != v[i] {
				return false
			}
		}
	}
	return true
}

func openAt(t *testing.T, dir string, clk clock.Clock, mod func(*Config)) *Outbox {
	t.Helper()
	cfg := Config{Dir: dir, MaxBytes: 1 << 20, Clock: clk}
	if mod != nil {
		mod(&cfg)
	}
	o, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// checkFound fails unless both lookups (index only and surely) return want, and an id never
// recorded is not found.
func checkFound(t *testing.T, e *Executed, want ExecutedRecord, when string) {
	t.Helper()
	ctx := context.Background()
	for _, surely := range []bool{false, true} {
		got, err := e.Lookup(ctx, want.Probe, surely)
		if err != nil || !sameRecord(got, want) {
			t.Fatalf("%s (surely=%v): record %+v, err %v; want %+v", when, surely, got, err, want)
		}
		if none, err := e.Lookup(ctx, "never-run", surely); none != nil || err != nil {
			t.Fatalf("%s (surely=%v): an id never recorded: record %+v, err %v", when, surely, none, err)
		}
	}
}

// TestExecutedRecordsAcrossRestarts: a probe recorded by one process over a data dir is found
// by the next one, also on a first delivery (a republish of the same id), which reads only
// the store's index; an id never recorded is not found, whether or not the store is read.
func TestExecutedRecordsAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(reference)
	o := openAt(t, dir, clk, nil)
	recs := []ExecutedRecord{testRecord("run-1/step a+b"), testRecord("probe-2")}
	recs[1].Header, recs[1].Data, recs[1].Finished = nil, nil, time.Time{} // no headers, no data, no time
	recs[1].Header = nats.Header{}
	for _, r := range recs {
		if err := o.Executed().Record(ctx, r, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range recs {
		checkFound(t, o.Executed(), r, "same process")
	}
	o.Close()

	o = openAt(t, dir, clk, nil)
	defer o.Close()
	for _, r := range recs {
		checkFound(t, o.Executed(), r, "after a restart")
	}
	if n, err := o.Executed().Len(ctx); err != nil || n != 2 {
		t.Fatalf("records after a restart: %d (err %v), want 2", n, err)
	}
}

// TestExecutedLegacyStream: records earlier bridges kept in the outbox's JetStream (one
// message per record, in the header layout or in JSON before that) are still found after
// an upgrade, and no new record goes there.
func TestExecutedLegacyStream(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(reference)
	o := openAt(t, dir, clk, nil)
	if _, err := o.js.CreateStream(ctx, jetstream.StreamConfig{Name: legacyStream, Subjects: []string{legacyPrefix + ">"},
		Storage: jetstream.FileStorage, MaxMsgsPerSubject: 1, AllowMsgTTL: true}); err != nil {
		t.Fatal(err)
	}
	inHeaders, inJSON := testRecord("header-layout"), testRecord("json-layout")
	h := nats.Header{recordSubject: []string{inHeaders.Subject}, recordAttempt: []string{"2"}, recordResults: []string{"3"},
		recordFinished: []string{inHeaders.Finished.Format(time.RFC3339Nano)}, "Nats-TTL": []string{"1h"}}
	for k, v := range inHeaders.Header {
		h[recordResultHeader+k] = v
	}
	body, _ := json.Marshal(inJSON)
	for _, m := range []*nats.Msg{{Subject: legacySubject(inHeaders.Probe), Header: h, Data: inHeaders.Data},
		{Subject: legacySubject(inJSON.Probe), Header: nats.Header{"Nats-TTL": []string{"1h"}}, Data: body}} {
		if _, err := o.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()

	o = openAt(t, dir, clk, nil)
	defer o.Close()
	checkFound(t, o.Executed(), inHeaders, "a header-layout record after the upgrade")
	checkFound(t, o.Executed(), inJSON, "a JSON record after the upgrade")
	if err := o.Executed().Record(ctx, testRecord("new"), time.Hour); err != nil {
		t.Fatal(err)
	}
	if n, err := o.Executed().Len(ctx); err != nil || n != 3 {
		t.Fatalf("records: %d (err %v), want 3", n, err)
	}
	if info, err := o.Executed().legacy.Info(ctx); err != nil || info.State.Msgs != 2 {
		t.Fatalf("earlier stream: %+v (err %v), want its 2 records and no new one", info, err)
	}
}

// TestExecutedTornTail: a record cut short by a crash mid-write is dropped at the next open
// (its probe was not acked, so it is redelivered and runs again: at most once per
// execution holds for every record that was whole); the records before it stay, and the
// store takes new ones.
func TestExecutedTornTail(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		tear func(t *testing.T, path string)
	}{
		{"last record cut short", func(t *testing.T, path string) {
			st, _ := os.Stat(path)
			if err := os.Truncate(path, st.Size()-3); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage after the last record", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte{9, 0, 0, 0, 1, 2, 3, 4, 5}); err != nil {
				t.Fatal(err)
			}
		}},
		{"last record's bytes flipped", func(t *testing.T, path string) {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-1] ^= 0xff
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := clock.NewFake(reference)
			o := openAt(t, dir, clk, nil)
			kept, torn := testRecord("kept"), testRecord("torn")
			for _, r := range []ExecutedRecord{kept, torn} {
				if err := o.Executed().Record(ctx, r, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			o.Close()
			segs, _ := filepath.Glob(filepath.Join(dir, executedDir, "*"+segmentSuffix))
			if len(segs) != 1 {
				t.Fatalf("segments %v, want 1", segs)
			}
			tc.tear(t, segs[0])

			o = openAt(t, dir, clk, nil)
			checkFound(t, o.Executed(), kept, "the whole record")
			wantTorn := tc.name == "garbage after the last record"
			if got, err := o.Executed().Lookup(ctx, torn.Probe, true); err != nil || (got != nil) != wantTorn {
				t.Fatalf("the last record: %+v, err %v; found want %v", got, err, wantTorn)
			}
			next := testRecord("next")
			if err := o.Executed().Record(ctx, next, time.Hour); err != nil {
				t.Fatal(err)
			}
			o.Close()
			o = openAt(t, dir, clk, nil)
			defer o.Close()
			checkFound(t, o.Executed(), kept, "the whole record, second restart")
			checkFound(t, o.Executed(), next, "a record after the torn one")
		})
	}
}

// TestExecutedExpiryAndLimits: a record is not found past its TTL and its segment is
// deleted once every record in it expired; a full store refuses records (ErrExecutedFull)
// until expired ones make room.
func TestExecutedExpiryAndLimits(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(reference)
	o := openAt(t, dir, clk, func(c *Config) { c.ExecutedMaxMsgs = 3 })
	e := o.Executed()
	for i := range 3 {
		if err := e.Record(ctx, testRecord("p"+strconv.Itoa(i)), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Record(ctx, testRecord("p3"), time.Hour); !errors.Is(err, ErrExecutedFull) {
		t.Fatalf("a record beyond the limit: err %v, want ErrExecutedFull", err)
	}
	clk.Advance(2 * time.Minute)
	if got, err := e.Lookup(ctx, "p0", true); got != nil || err != nil {
		t.Fatalf("a record past its TTL: %+v, err %v; want none", got, err)
	}
	if err := e.Record(ctx, testRecord("p3"), time.Hour); err != nil {
		t.Fatalf("a record once the others expired: %v", err)
	}
	if n, err := e.Len(ctx); err != nil || n != 1 {
		t.Fatalf("records: %d (err %v), want 1", n, err)
	}
	o.Close()
	// The next process starts a new segment; the first one, whose records all expired once
	// p3's has, is deleted.
	clk.Advance(2 * time.Hour)
	o = openAt(t, dir, clk, nil)
	defer o.Close()
	if got, err := o.Executed().Lookup(ctx, "p3", true); got != nil || err != nil {
		t.Fatalf("a record past its TTL after a restart: %+v, err %v; want none", got, err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, executedDir, "*"+segmentSuffix)); len(segs) != 0 {
		t.Fatalf("segments left after every record expired: %v", segs)
	}
}

// TestExecutedSyncBesideRecords: the fsyncs run outside the store's lock, so records and
// lookups go on while a sync runs; a segment left for a new one (its span passed) is still
// synced, and every record — before, across and after the switch, written while syncs ran —
// is found by the next process.
func TestExecutedSyncBesideRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := clock.NewFake(reference)
	o := openAt(t, dir, clk, func(c *Config) { c.ExecutedMaxMsgs = 10_000 })
	e := o.Executed()
	var want []ExecutedRecord
	record := func(probe string) {
		t.Helper()
		r := testRecord(probe)
		if err := e.Record(ctx, r, time.Hour); err != nil {
			t.Fatalf("record %s: %v", probe, err)
		}
		want = append(want, r)
	}
	record("first")
	clk.Advance(segmentSpan + time.Second) // the next record starts a new segment
	record("second")
	syncs := make(chan struct{})
	go func() {
		defer close(syncs)
		for range 50 {
			e.sync()
		}
	}()
	for i := range 500 {
		record("during-" + strconv.Itoa(i))
	}
	<-syncs
	e.sync()
	e.mu.Lock()
	left, dirDirty, dirty := len(e.unsynced), e.dirDirty, e.dirty
	e.mu.Unlock()
	if left != 0 || dirDirty || dirty {
		t.Fatalf("after a sync: %d segments waiting, directory to sync %v, active segment dirty %v; want none", left, dirDirty, dirty)
	}
	o.Close()
	if segs, _ := filepath.Glob(filepath.Join(dir, executedDir, "*"+segmentSuffix)); len(segs) != 2 {
		t.Fatalf("segments: %v, want 2", segs)
	}
	o = openAt(t, dir, clk, func(c *Config) { c.ExecutedMaxMsgs = 10_000 })
	defer o.Close()
	for _, r := range want {
		got, err := o.Executed().Lookup(ctx, r.Probe, false)
		if err != nil || !sameRecord(got, r) {
			t.Fatalf("after a restart, %s: record %+v, err %v", r.Probe, got, err)
		}
	}
}

// BenchmarkExecutedRecord: CPU of one record (the write per executed probe).
func BenchmarkExecutedRecord(b *testing.B) {
	o, err := Open(context.Background(), Config{Dir: b.TempDir(), MaxBytes: 1 << 20, ExecutedMaxMsgs: 1 << 30, ExecutedMaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer o.Close()
	rec := testRecord("x")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rec.Probe = "probe-" + strconv.Itoa(i)
		if err := o.Executed().Record(context.Background(), rec, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
