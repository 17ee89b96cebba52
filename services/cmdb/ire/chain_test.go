package ire_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// mixedBatch is a batch that meets most of what reconciliation does: CIs created then
// changed, a shared serial, a name and address moved to a new device, a conflict met twice,
// relations seen again, keyed receipts. tag ("P", "C") and net (7, 8) keep the serials,
// MACs and addresses of two tests apart. TestBatchWrittenInPartsIsTheSame writes it in
// parts; the chain tests split it into batches of a chain, so that each of these crosses a
// batch (and transaction) boundary.
func mixedBatch(tag string, net int) ([]envelope.CIPayload, []string) {
	oem := "VMW-" + tag + "-42"
	serial := func(s string) string { return "SN-" + tag + s }
	mac := func(s string) string { return fmt.Sprintf("02:00:00:00:%02x:%s", net, s) }
	ip := func(s string) string { return fmt.Sprintf("10.%d.%s", net, s) }
	later := func(p envelope.CIPayload, d time.Duration) envelope.CIPayload { p.Observed = t0.Add(d); return p }
	a := discovered(serial("A"), []string{mac("0a")}, attrs("name", "a", "ip_address", ip("0.1")))
	aMore := later(discovered(serial("A"), []string{mac("0a")}, attrs("name", "a", "ip_address", ip("0.1"), "ram_mb", 8192, "os", "Ubuntu")), time.Minute)
	b := discovered(serial("B"), []string{mac("0b")}, attrs("name", "b", "ip_address", ip("0.2")))
	both := discovered("", []string{mac("0a"), mac("0b")}, attrs("name", "ab", "ip_address", ip("0.3")))
	delete(both.Items[0].Attributes, "serial_number")
	clone1 := discovered(oem, []string{mac("c1")}, attrs("name", "c1", "ip_address", ip("1.1")))
	clone2 := discovered(oem, []string{mac("c2")}, attrs("name", "c2", "ip_address", ip("1.2")))
	reuse := envelope.CIPayload{Source: "discovery", Observed: t0.Add(time.Hour), Items: []envelope.CIItem{
		item("h", "linux_server", attrs("serial_number", serial("NEW"), "name", "a", "ip_address", ip("0.1"))),
	}}
	manual := envelope.CIPayload{Source: "manual", Observed: t0.Add(2 * time.Minute), Items: []envelope.CIItem{
		item("h", "linux_server", attrs("serial_number", serial("B"), "ram_mb", 16384, "environment", "Production"))}}
	batch := []envelope.CIPayload{a, b, aMore, both, clone1, later(a, 2*time.Minute), clone2, both, manual, later(b, 3*time.Minute), reuse, later(clone1, time.Hour)}
	keys := []string{"k-a", "", "k-amore", "", "k-c1", "", "k-c2", "", "k-manual", "", "k-reuse", "k-a"}
	return batch, keys
}

// withKeys prepares ps with a receipt announced under each non-empty key.
func withKeys(t *testing.T, eng *ire.Engine, batch []envelope.CIPayload, keys []string) []*ire.Prepared {
	t.Helper()
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

func outcomesOf(t *testing.T, res []ire.Result) string {
	t.Helper()
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

// Batches of a chain are reconciled before the previous ones committed — a batch updates
// CIs, moves identifiers and replays receipts an earlier batch of the chain wrote — and end
// in the same store, with the same outcomes, as the payloads ingested one by one. On a store
// that does not chain transactions (PostgreSQL), Chain says so.
func TestChainedBatchesAreOneByOne(t *testing.T) {
	batch, keys := mixedBatch("C", 8)
	storetest.ForEach(t, func(t *testing.T, be storetest.Backend) {
		chained := newFixture(t, be)
		ch, err := chained.eng.Chain(chained.ctx, 4)
		if err != nil {
			t.Fatal(err)
		}
		if be.Name != "sqlite" {
			if ch != nil {
				t.Fatalf("%s: the engine chains transactions; only SQLite's store does", be.Name)
			}
			return
		}
		if ch == nil {
			t.Fatal("sqlite: no chain of transactions")
		}
		single := newFixture(t, storetest.Backend{Name: be.Name, DSN: "sqlite://" + filepath.Join(t.TempDir(), "single.db")})
		whole := newFixture(t, storetest.Backend{Name: be.Name, DSN: "sqlite://" + filepath.Join(t.TempDir(), "whole.db")})
		ire.SetFlushEvery(chained.eng, 1) // parts after every payload, too
		ps := withKeys(t, chained.eng, batch, keys)
		// Every batch is queued before any is waited for: each is reconciled while the
		// earlier ones' writes and commits may not have run.
		var waits []func() ([]ire.Result, error)
		for i := 0; i < len(ps); i += 3 {
			waits = append(waits, ch.Ingest(chained.ctx, ps[i:min(len(ps), i+3)]))
		}
		var res []ire.Result
		for i, w := range waits {
			r, err := w()
			if err != nil {
				t.Fatalf("chained batch %d: %v", i, err)
			}
			res = append(res, r...)
		}
		if err := ch.Close(); err != nil {
			t.Fatalf("close the chain: %v", err)
		}
		got := outcomesOf(t, res)
		want := outcomesOf(t, whole.eng.IngestBatch(whole.ctx, withKeys(t, whole.eng, batch, keys)))
		if got != want {
			t.Errorf("outcomes through the chain:\n%s\nas one batch:\n%s", got, want)
		}
		for i, p := range batch {
			if keys[i] == "" || !slices.Contains(keys[:i], keys[i]) {
				single.ingest(p)
			}
		}
		sc, ss := normalized(chained.snapshot()), normalized(single.snapshot())
		if sc != ss {
			t.Errorf("store written through the chain differs from one by one:\nchain  %s\nsingle %s", sc, ss)
		}
		if !strings.Contains(sc, "Production") || !strings.Contains(sc, "Ubuntu") {
			t.Fatalf("the later batches' changes are missing:\n%s", sc)
		}
		// The writer connection is free again: a plain ingest goes through.
		single.ingest(discovered("SN-AFTER", []string{"02:00:00:00:08:ff"}, nil))
		chained.ingest(discovered("SN-AFTER", []string{"02:00:00:00:08:ff"}, nil))
	})
}

// When another writer changes the database between two transactions of a chain — another
// connection (a second process), or this store outside the chain (an ingest not through
// the chain, stale marking) — what the chain read may be out of date: the next transaction
// fails with ErrChainStale, writes nothing, and so does every later one; the batches
// ingested again outside the chain end in the right store (the device the other writer
// created is found, not duplicated).
func TestChainedBatchFailsWhenTheDatabaseChangedUnderIt(t *testing.T) {
	for _, writer := range []string{"another connection", "this store outside the chain"} {
		t.Run(writer, func(t *testing.T) {
			dsn := "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")
			f := newFixture(t, storetest.Backend{Name: "sqlite", DSN: dsn})
			other := f
			if writer == "another connection" {
				other = newFixture(t, storetest.Backend{Name: "sqlite", DSN: dsn}) // a second process's store
			}
			host := func(n int, name string, at time.Duration) envelope.CIPayload {
				p := discovered(fmt.Sprintf("SN-S%d", n), []string{fmt.Sprintf("02:00:00:00:09:%02d", n)}, attrs("name", name, "ip_address", fmt.Sprintf("10.9.0.%d", n)))
				p.Observed = t0.Add(at)
				return p
			}
			ch, err := f.eng.Chain(f.ctx, 2)
			if err != nil || ch == nil {
				t.Fatalf("chain: %v (nil: %v)", err, ch == nil)
			}
			batch1 := prepare(t, f.eng, []envelope.CIPayload{host(1, "s1", 0), host(3, "s3", 0)})
			if _, err := ch.Ingest(f.ctx, batch1)(); err != nil {
				t.Fatalf("first batch: %v", err)
			}
			other.ingest(host(2, "s2", 0)) // commits between the chain's transactions
			batch2 := prepare(t, f.eng, []envelope.CIPayload{host(2, "s2-renamed", time.Minute)})
			batch3 := prepare(t, f.eng, []envelope.CIPayload{host(4, "s4", 0)})
			w2 := ch.Ingest(f.ctx, batch2)
			w3 := ch.Ingest(f.ctx, batch3)
			if _, err := w2(); !errors.Is(err, store.ErrChainStale) {
				t.Fatalf("second batch: error %v, want ErrChainStale", err)
			}
			if _, err := w3(); err == nil {
				t.Fatal("third batch committed after the second failed")
			}
			if err := ch.Close(); err != nil {
				t.Fatalf("close the chain: %v", err)
			}
			counts, err := f.st.CountByClass(f.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n := counts["linux_server"]; n != 3 { // s1, s3 (first batch), s2 (the other writer)
				t.Fatalf("%d servers after the failed batches, want 3 (nothing of them written): %v", n, counts)
			}
			for i, ps := range [][]*ire.Prepared{batch2, batch3} {
				for _, r := range f.eng.IngestBatch(f.ctx, ps) {
					if r.Err != nil {
						t.Fatalf("batch %d again: %v", i+2, r.Err)
					}
				}
			}
			var names []string
			for _, c := range f.list("linux_server") {
				names = append(names, c.Name)
			}
			slices.Sort(names)
			if want := []string{"s1", "s2-renamed", "s3", "s4"}; !slices.Equal(names, want) {
				t.Fatalf("servers %v, want %v (the other writer's device found and renamed, not duplicated)", names, want)
			}
		})
	}
}
