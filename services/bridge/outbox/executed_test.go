package outbox

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestExecutedRecordsAcrossRestarts: a probe recorded by one process over a data dir is found
// by the next one, also on a first delivery (a republish of the same id), which reads only
// the store's index; an id never recorded is not found, whether or not the store is read.
func TestExecutedRecordsAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() *Outbox {
		t.Helper()
		o, err := Open(ctx, Config{Dir: dir, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	want := ExecutedRecord{Probe: "run-1/step a+b", Attempt: 2, Results: 3, Subject: "result.orchestration.lab.http_request.br-1",
		Header: nats.Header{nats.MsgIdHdr: []string{"run-1/step a+b-2-2"}, "Ce-Type": []string{"outpost.result.v1"}},
		Data:   []byte(`{"status":"ok"}`), Finished: time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)}
	check := func(e *Executed, when string) {
		t.Helper()
		for _, surely := range []bool{false, true} {
			got, err := e.Lookup(ctx, want.Probe, surely)
			if err != nil || got == nil {
				t.Fatalf("%s (surely=%v): record %v, err %v; want the record", when, surely, got, err)
			}
			if got.Probe != want.Probe || got.Attempt != want.Attempt || got.Results != want.Results || got.Subject != want.Subject ||
				got.FinalID() != want.FinalID() || !bytes.Equal(got.Data, want.Data) || !got.Finished.Equal(want.Finished) {
				t.Fatalf("%s (surely=%v): record %+v, want %+v", when, surely, got, want)
			}
			if none, err := e.Lookup(ctx, "never-run", surely); none != nil || err != nil {
				t.Fatalf("%s (surely=%v): an id never recorded: record %+v, err %v", when, surely, none, err)
			}
		}
	}

	o := open()
	if err := o.Executed().Record(ctx, want, time.Hour); err != nil {
		t.Fatal(err)
	}
	check(o.Executed(), "same process")
	o.Close()

	o = open()
	defer o.Close()
	check(o.Executed(), "after a restart")
	if n, err := o.Executed().Len(ctx); err != nil || n != 1 {
		t.Fatalf("records after a restart: %d (err %v), want 1", n, err)
	}
}
