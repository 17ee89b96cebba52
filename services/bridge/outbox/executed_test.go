package outbox

import (
	"bytes"
	"context"
	"encoding/json"
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
	// A record as bridges before the header layout wrote it (JSON) stays readable after an
	// upgrade.
	legacy := want
	legacy.Probe = "legacy-probe"
	body, _ := json.Marshal(legacy)
	if _, err := o.js.PublishMsg(ctx, &nats.Msg{Subject: executedSubject(legacy.Probe), Header: nats.Header{"Nats-TTL": []string{"1h"}}, Data: body}); err != nil {
		t.Fatal(err)
	}
	o.Close()

	o = open()
	defer o.Close()
	check(o.Executed(), "after a restart")
	if n, err := o.Executed().Len(ctx); err != nil || n != 2 {
		t.Fatalf("records after a restart: %d (err %v), want 2", n, err)
	}
	got, err := o.Executed().Lookup(ctx, legacy.Probe, false)
	if err != nil || got == nil || got.Probe != legacy.Probe || got.Subject != legacy.Subject || got.FinalID() != legacy.FinalID() || !bytes.Equal(got.Data, legacy.Data) {
		t.Fatalf("a JSON record after the upgrade: %+v, err %v; want %+v", got, err, legacy)
	}
}
