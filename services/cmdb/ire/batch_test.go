package ire_test

import (
	"errors"
	"testing"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
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
