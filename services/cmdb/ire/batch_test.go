package ire_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// A batch does what its payloads ingested one by one do, in order: later payloads see
// what earlier ones wrote, precedence holds, an invalid payload is refused alone, and the same
// batch again changes nothing.
func TestIngestBatchIsIngestOneByOne(t *testing.T) {
	host := discovered("SN-BATCH", []string{"02:00:00:00:03:01"}, nil)
	moved := discovered("SN-BATCH", []string{"02:00:00:00:03:01"}, map[string]any{"ram_mb": 8192})
	manual := envelope.CIPayload{Source: "manual", Observed: t0, Items: []envelope.CIItem{
		item("h", "linux_server", attrs("serial_number", "SN-BATCH", "ram_mb", 16384))}}
	late := discovered("SN-BATCH", []string{"02:00:00:00:03:01"}, map[string]any{"ram_mb": 2048})
	late.Observed = t0.Add(1) // newer, but discovery ranks below manual: ram_mb stays 16384
	other := discovered("SN-OTHER", []string{"02:00:00:00:03:02"}, map[string]any{"name": "web02", "ip_address": "10.1.2.4"})
	invalid := envelope.CIPayload{Source: "discovery", Observed: t0}
	clone := discovered("SN-BATCH", []string{"02:00:00:00:03:09"}, map[string]any{"name": "clone", "ip_address": "10.1.2.9"})
	type want struct{ created, updated, unchanged int }
	cases := []struct {
		name  string
		batch []envelope.CIPayload
		want  []want // per payload; -1 created: ErrInvalid
		ram   string // the host's ram_mb at the end, when set
	}{
		{"new device then the same again", []envelope.CIPayload{host, host},
			[]want{{4, 0, 0}, {0, 0, 4}}, ""},
		{"an invalid payload is refused alone", []envelope.CIPayload{host, invalid, other},
			[]want{{4, 0, 0}, {-1, 0, 0}, {4, 0, 0}}, ""},
		{"updates in order, by precedence", []envelope.CIPayload{host, moved, manual, late},
			[]want{{4, 0, 0}, {0, 1, 3}, {0, 1, 0}, {0, 0, 4}}, "16384"}, // manual outranks discovery
		// The second device reports the first one's serial with other adapters: the serial
		// becomes shared inside the batch, and both devices are still told apart after.
		{"a serial two devices share, found in the batch", []envelope.CIPayload{host, clone, host, clone},
			[]want{{4, 0, 0}, {4, 0, 0}, {0, 0, 4}, {0, 0, 4}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
				// single is a second fresh database of the same implementation.
				fresh := storetest.Backends(t)[0]
				if b.Name == "postgres" {
					fresh = storetest.Backends(t)[1]
				}
				batched, single := newFixture(t, b), newFixture(t, fresh)
				res := batched.eng.IngestBatch(batched.ctx, prepare(t, batched.eng, c.batch))
				if len(res) != len(c.batch) {
					t.Fatalf("%d results for %d payloads", len(res), len(c.batch))
				}
				for i, r := range res {
					w := c.want[i]
					if w.created < 0 {
						if r.Err == nil {
							t.Fatalf("payload %d: ingested, want an error (not prepared)", i)
						}
						continue
					}
					if r.Err != nil {
						t.Fatalf("payload %d: %v", i, r.Err)
					}
					got := want{len(r.Outcome.Created), len(r.Outcome.Updated), len(r.Outcome.Unchanged)}
					if got != w {
						t.Errorf("payload %d: created/updated/unchanged %v, want %v", i, got, w)
					}
					// One by one, the same payload does the same.
					one, err := single.eng.Ingest(single.ctx, c.batch[i])
					if err != nil {
						t.Fatalf("payload %d alone: %v", i, err)
					}
					if g := (want{len(one.Created), len(one.Updated), len(one.Unchanged)}); g != got {
						t.Errorf("payload %d: alone %v, in a batch %v", i, g, got)
					}
				}
				if c.ram != "" {
					for _, ci := range batched.list("linux_server") {
						if ram := str(batched.get(ci.ID).Attributes["ram_mb"]); ram != c.ram {
							t.Errorf("ram_mb %s, want %s", ram, c.ram)
						}
					}
				}
				before := batched.snapshot()
				for i, r := range batched.eng.IngestBatch(batched.ctx, prepare(t, batched.eng, c.batch)) {
					if r.Err == nil && len(r.Outcome.Created)+len(r.Outcome.Updated)+len(r.Outcome.Relations) != 0 {
						t.Errorf("payload %d again changed something: %+v", i, r.Outcome)
					}
				}
				if after := batched.snapshot(); after != before {
					t.Fatalf("store changed on re-ingest of the batch:\nbefore %s\nafter  %s", before, after)
				}
			})
		})
	}
}

// prepare validates every payload; an invalid one stays nil in the batch, as IngestBatch
// must then refuse it alone.
func prepare(t *testing.T, eng *ire.Engine, ps []envelope.CIPayload) []*ire.Prepared {
	t.Helper()
	out := make([]*ire.Prepared, len(ps))
	for i, p := range ps {
		prep, err := eng.Prepare(p)
		if err != nil && !errors.Is(err, ire.ErrInvalid) {
			t.Fatalf("payload %d: %v, want nil or ErrInvalid", i, err)
		}
		out[i] = prep
	}
	return out
}

// A payload announced with a key stores its receipt and writes its messages in its own
// transaction; the same key again — alone or later in the same batch — reconciles nothing
// and replays the stored receipt, so a redelivered payload learns what it created, not
// "unchanged".
func TestKeyedPayloadReplaysItsReceipt(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, b storetest.Backend) {
		f := newFixture(t, b)
		host := discovered("SN-KEYED", []string{"02:00:00:00:04:01"}, nil)
		announce := func(p *ire.Prepared, key string, replays *[]string) {
			p.Announce(key,
				func(out ire.Outcome) (string, []store.OutboxMsg, error) {
					rc := fmt.Sprintf("created=%d unchanged=%d", len(out.Created), len(out.Unchanged))
					return rc, []store.OutboxMsg{{Subject: "receipt." + key, MsgID: key, Data: []byte(strconv.Quote(rc))}}, nil
				},
				func(rc string) ([]store.OutboxMsg, error) {
					*replays = append(*replays, rc)
					return []store.OutboxMsg{{Subject: "receipt." + key, MsgID: key, Data: []byte(strconv.Quote(rc))}}, nil
				})
		}
		var replays []string
		// p1 and its copy in one batch, then p1 again alone, then a new key for the same device.
		batch := prepare(t, f.eng, []envelope.CIPayload{host, host})
		announce(batch[0], "p1", &replays)
		announce(batch[1], "p1", &replays)
		res := f.eng.IngestBatch(f.ctx, batch)
		again := prepare(t, f.eng, []envelope.CIPayload{host, host})
		announce(again[0], "p1", &replays)
		announce(again[1], "p2", &replays)
		res = append(res, f.eng.IngestBatch(f.ctx, again[:1])[0], f.eng.IngestBatch(f.ctx, again[1:])[0])
		want := []struct {
			replayed bool
			receipt  string
		}{{false, "created=4 unchanged=0"}, {true, "created=4 unchanged=0"}, {true, "created=4 unchanged=0"}, {false, "created=0 unchanged=4"}}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("ingest %d: %v", i, r.Err)
			}
			if r.Replayed != want[i].replayed || r.Receipt != want[i].receipt {
				t.Errorf("ingest %d: replayed %v receipt %q, want %v %q", i, r.Replayed, r.Receipt, want[i].replayed, want[i].receipt)
			}
		}
		if len(replays) != 2 {
			t.Errorf("%d replays, want 2", len(replays))
		}
		// Every receipt went to the outbox with the changes, in order.
		msgs, err := f.st.PendingOutbox(f.ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			data, _ := strconv.Unquote(string(m.Data))
			got = append(got, m.Subject+" "+data)
		}
		wantMsgs := []string{"receipt.p1 created=4 unchanged=0", "receipt.p1 created=4 unchanged=0",
			"receipt.p1 created=4 unchanged=0", "receipt.p2 created=0 unchanged=4"}
		if strings.Join(got, "\n") != strings.Join(wantMsgs, "\n") {
			t.Errorf("outbox:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantMsgs, "\n"))
		}
		var seqs []int64
		for _, m := range msgs {
			if !slices.Contains(seqs, m.Seq) {
				seqs = append(seqs, m.Seq)
			}
		}
		if err := f.st.DeleteOutbox(f.ctx, seqs); err != nil {
			t.Fatal(err)
		}
		if left, err := f.st.PendingOutbox(f.ctx, 100); err != nil || len(left) != 0 {
			t.Errorf("outbox after delete: %d messages (%v), want none", len(left), err)
		}
		// Pruned receipts are forgotten: the payload is then reconciled (unchanged).
		if n, err := f.st.PruneReceipts(f.ctx, t0.Add(time.Hour)); err != nil || n != 2 {
			t.Errorf("pruned %d receipts (%v), want 2", n, err)
		}
		late := prepare(t, f.eng, []envelope.CIPayload{host})
		announce(late[0], "p1", &replays)
		if r := f.eng.IngestBatch(f.ctx, late)[0]; r.Err != nil || r.Replayed || r.Receipt != "created=0 unchanged=4" {
			t.Errorf("after pruning: %+v, want a fresh unchanged receipt", r)
		}
	})
}

// A batch written in parts — what it reconciled handed to the store every payload, as a
// pipelined SQLite store does every few hundred rows — ends in the same state as the batch
// written at once and as its payloads ingested one by one: CIs created then changed later
// in the batch, identifiers moved and found shared, relations seen again, index entries
// replaced, a conflict met twice, receipts.
func TestBatchWrittenInPartsIsTheSame(t *testing.T) {
	batch, keys := mixedBatch("P", 7)

	storetest.ForEach(t, func(t *testing.T, be storetest.Backend) {
		fresh := func() storetest.Backend {
			if be.Name == "postgres" {
				return storetest.Backend{Name: be.Name, DSN: pgtest.DSN(t)}
			}
			return storetest.Backend{Name: be.Name, DSN: "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")}
		}
		parts, whole, single := newFixture(t, be), newFixture(t, fresh()), newFixture(t, fresh())
		// A batch whose transaction fails is ingested again payload by payload, which would
		// hide a wrong write: the log tells.
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		for _, f := range []*fixture{parts, whole} {
			eng, err := ire.New(f.st, f.model, ire.Options{Now: func() time.Time { return t0 }, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			f.eng = eng
		}
		ire.SetFlushEvery(parts.eng, 1)
		ire.SetFlushEvery(whole.eng, 1<<30)
		withKeys := func(eng *ire.Engine) []*ire.Prepared {
			ps := prepare(t, eng, batch)
			for i, p := range ps {
				if keys[i] != "" {
					k := keys[i]
					p.Announce(k, func(out ire.Outcome) (string, []store.OutboxMsg, error) {
						return fmt.Sprintf("%s: %d created, %d updated", k, len(out.Created), len(out.Updated)), nil, nil
					}, func(string) ([]store.OutboxMsg, error) { return nil, nil })
				}
			}
			return ps
		}
		outcomes := func(res []ire.Result) string {
			var sb strings.Builder
			for i, r := range res {
				if r.Err != nil {
					t.Fatalf("payload %d: %v", i, r.Err)
				}
				fmt.Fprintf(&sb, "%d: created %d updated %d unchanged %d conflicts %d relations %d replayed %v %q\n", i,
					len(r.Outcome.Created), len(r.Outcome.Updated), len(r.Outcome.Unchanged), len(r.Outcome.Conflicts),
					len(r.Outcome.Relations), r.Replayed, r.Receipt)
			}
			return sb.String()
		}
		gotParts := outcomes(parts.eng.IngestBatch(parts.ctx, withKeys(parts.eng)))
		gotWhole := outcomes(whole.eng.IngestBatch(whole.ctx, withKeys(whole.eng)))
		if strings.Contains(logs.String(), "one by one") {
			t.Fatalf("a batch was split, its transaction failed:\n%s", logs.String())
		}
		if gotParts != gotWhole {
			t.Errorf("outcomes in parts:\n%s\nat once:\n%s", gotParts, gotWhole)
		}
		for i, p := range batch {
			if keys[i] == "" || !slices.Contains(keys[:i], keys[i]) {
				single.ingest(p)
			}
		}
		sp, sw, ss := normalized(parts.snapshot()), normalized(whole.snapshot()), normalized(single.snapshot())
		if sp != sw {
			t.Errorf("store written in parts differs from written at once:\nparts %s\nonce  %s", sp, sw)
		}
		if sp != ss {
			t.Errorf("store written in parts differs from one by one:\nparts %s\nsingle %s", sp, ss)
		}
		if !strings.Contains(sp, "Production") || !strings.Contains(sp, "Ubuntu") {
			t.Fatalf("the batch's later changes are missing:\n%s", sp)
		}
	})
}

// normalized replaces the ids (ULIDs) of a snapshot by their order of first appearance,
// so that two databases written alike compare equal.
func normalized(s string) string {
	ids := map[string]string{}
	return ulidPattern.ReplaceAllStringFunc(s, func(id string) string {
		if n, ok := ids[id]; ok {
			return n
		}
		ids[id] = fmt.Sprintf("#%d", len(ids))
		return ids[id]
	})
}

var ulidPattern = regexp.MustCompile(`[0-9A-HJKMNP-TV-Z]{26}`)
