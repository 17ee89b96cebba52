package cmdb_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// publishID sends a payload with the producer's payload id, as the importer does. keepMsgID
// false drops the Nats-Msg-Id header: the stream then takes a copy it would otherwise
// deduplicate, as it does once its duplicate window has passed.
func (h *hub) publishID(t testing.TB, p envelope.CIPayload, id string, keepMsgID bool) {
	t.Helper()
	pub := bus.NewPublisher(h.js, envelope.ServiceSource("import"), nil)
	msg, span, err := pub.Message(context.Background(), cmdb.IngestSubject(p, cmdb.DefaultPartitions), envelope.Meta{ID: id, Run: "run-1"}, &p)
	if err != nil {
		t.Fatal(err)
	}
	span.End()
	if !keepMsgID {
		msg.Header.Del(nats.MsgIdHdr)
	}
	if _, err := h.js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

// A replica that committed an ingest and died before publishing what it announced: the
// payload is acked (it left the work queue), its change events and receipt wait in the
// outbox, and the next replica on the database publishes them.
func TestOutboxSurvivesACrashBetweenCommitAndPublish(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		var mu sync.Mutex
		held := 0
		restore := cmdb.SetBeforePublish(func(_ context.Context, msgs []store.OutboxMsg) error {
			mu.Lock()
			held = len(msgs)
			mu.Unlock()
			return fmt.Errorf("frozen between commit and publish") // this replica never publishes
		})
		defer restore()
		stop := h.start(t, testConfig(b))
		p := discovered("SN-OUTBOX", []string{"02:00:00:00:05:01", "02:00:00:00:05:02"}, nil)
		h.publishID(t, p, "payload-outbox-1", true)
		h.drained(t, 30*time.Second) // acked at the commit
		eventually(t, 10*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if held != 5+1 {
				return fmt.Errorf("%d messages in the outbox, want 5 change events and a receipt", held)
			}
			return nil
		})
		if n, r := len(h.changes(t)), len(h.receipts(t)); n+r != 0 {
			t.Fatalf("%d change events and %d receipts published by a frozen drainer", n, r)
		}
		stop() // the replica dies with its announcements unpublished
		restore()

		h.start(t, testConfig(b))
		eventually(t, 20*time.Second, func() error {
			if n := len(h.changes(t)); n != 5 {
				return fmt.Errorf("%d change events after the restart, want 5", n)
			}
			rs := h.receipts(t)
			if len(rs) != 1 {
				return fmt.Errorf("%d receipts after the restart, want 1", len(rs))
			}
			if r := rs[0]; r.Payload != "payload-outbox-1" || r.Created != 5 {
				return fmt.Errorf("receipt %+v, want payload-outbox-1 with 5 created", r)
			}
			return nil
		})
		if c := counts(t, h.nc); c.Total != 5 {
			t.Errorf("%d CIs, want 5", c.Total)
		}
	})
}

// A payload delivered again after its ingest committed (the stream's duplicate window
// passed, or a producer resumed its run and sent it again) gets the receipt of the ingest
// that did the work: "created", not the "unchanged" a second reconciliation would say.
func TestRedeliveredPayloadGetsItsTrueReceipt(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		h := newHub(t, true)
		var mu sync.Mutex
		var sent []envelope.Ingested // every receipt the drainer publishes, duplicates included
		restore := cmdb.SetBeforePublish(func(_ context.Context, msgs []store.OutboxMsg) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				if !strings.HasPrefix(m.Subject, bus.IngestedSubject("")) {
					continue
				}
				_, r, err := envelope.DecodeInto[*envelope.Ingested](nats.Header(m.Header), m.Data)
				if err != nil {
					return err
				}
				sent = append(sent, *r)
			}
			return nil
		})
		defer restore()
		h.start(t, testConfig(b))
		p := discovered("SN-REDELIVERED", []string{"02:00:00:00:06:01"}, nil)
		h.publishID(t, p, "payload-redelivered", true)
		h.drained(t, 30*time.Second)
		h.publishID(t, p, "payload-redelivered", false)
		h.drained(t, 30*time.Second)
		eventually(t, 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(sent) != 2 {
				return fmt.Errorf("%d receipts published, want 2 (one per delivery)", len(sent))
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		for i, r := range sent {
			if r.Payload != "payload-redelivered" || r.Created != 4 || r.Unchanged != 0 || len(r.Refs) != 4 {
				t.Errorf("receipt %d: %+v, want the first ingest's: 4 created", i, r)
			}
			for ref, o := range r.Refs {
				if o.Outcome != envelope.ItemCreated {
					t.Errorf("receipt %d: item %s %s, want created", i, ref, o.Outcome)
				}
			}
		}
		if len(sent) == 2 && !sent[0].Time.Equal(sent[1].Time) {
			t.Errorf("the second receipt was made anew (%s), not the stored one (%s)", sent[1].Time, sent[0].Time)
		}
		if c := counts(t, h.nc); c.Total != 4 {
			t.Errorf("%d CIs, want 4", c.Total)
		}
		mu.Unlock()

		// Another payload reusing the id is no redelivery: it is reconciled as what it is.
		changed := discovered("SN-REDELIVERED", []string{"02:00:00:00:06:01"}, attrs("ram_mb", 8192))
		h.publishID(t, changed, "payload-redelivered", false)
		h.drained(t, 30*time.Second)
		eventually(t, 20*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(sent) != 3 {
				return fmt.Errorf("%d receipts published, want 3", len(sent))
			}
			if r := sent[2]; r.Updated != 1 || r.Created != 0 {
				return fmt.Errorf("receipt of the changed payload %+v, want 1 updated", r)
			}
			return nil
		})
		mu.Lock()
	})
}
