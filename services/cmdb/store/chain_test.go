package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// A transaction of a chain that fails at the writer (here: a CI inserted twice) rolls
// back, and the transactions queued after it — reconciled on top of it — fail too and write
// nothing, even those whose own writes are fine; the chain's connection is free again
// after Close.
func TestChainStopsAtAFailedTransaction(t *testing.T) {
	ctx := context.Background()
	st := storetest.Backend{Name: "sqlite", DSN: "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")}.Open(t)
	cs, ok := st.(store.Chained)
	if !ok {
		t.Fatal("the SQLite store does not chain transactions")
	}
	ci := func(id string) store.CIState {
		return store.CIState{CIRow: store.CIRow{ID: id, Class: "linux_server", Name: strings.ToLower(id), Created: t0, Updated: t0, LastSeen: t0},
			Attrs: map[string]store.AttrRow{"name": {CIID: id, Attr: "name", Value: `"` + strings.ToLower(id) + `"`, Source: "test", Observed: t0}}}
	}
	write := func(tx store.Tx, ids ...string) {
		t.Helper()
		var b store.Batch
		for _, id := range ids {
			b.NewCIs = append(b.NewCIs, ci(id))
		}
		if err := tx.Write(ctx, &b); err != nil {
			t.Fatalf("write %v: %v", ids, err)
		}
	}
	ch, err := cs.Chain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx1 := ch.Next()
	write(tx1, "01CHAINA")
	c1 := tx1.Commit()
	tx2 := ch.Next()
	write(tx2, "01CHAINB")
	write(tx2, "01CHAINA") // committed by tx1: the insert fails
	c2 := tx2.Commit()
	tx3 := ch.Next()
	write(tx3, "01CHAINC") // fine by itself
	c3 := tx3.Commit()
	if err := c1(); err != nil {
		t.Fatalf("first transaction: %v", err)
	}
	if err := c2(); err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("second transaction: error %v, want the unique violation", err)
	}
	if err := c3(); err == nil {
		t.Fatal("third transaction committed after the second failed")
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	for id, want := range map[string]bool{"01CHAINA": true, "01CHAINB": false, "01CHAINC": false} {
		_, err := st.Get(ctx, id)
		if got := err == nil; got != want || (err != nil && !errors.Is(err, store.ErrNotFound)) {
			t.Errorf("CI %s: get error %v, want stored %v", id, err, want)
		}
	}
	// The connection was released with no transaction open: a plain update writes.
	if err := st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		return tx.Write(ctx, &store.Batch{NewCIs: []store.CIState{ci("01CHAIND")}})
	}); err != nil {
		t.Fatalf("update after the chain: %v", err)
	}
	if _, err := st.Get(ctx, "01CHAIND"); err != nil {
		t.Fatalf("CI written after the chain: %v", err)
	}
}
