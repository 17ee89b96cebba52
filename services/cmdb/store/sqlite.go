package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// OpenSQLite opens (creating if needed) the SQLite database file at path and migrates it.
//
// WAL lets readers proceed while the single writer commits; busy_timeout makes a second
// process (or a second Store on the same file) wait for the write lock instead of failing;
// transactions begin IMMEDIATE so that a writer never upgrades a read lock, the classic
// SQLite deadlock.
//
// Durability: the CMDB acks a payload only after the transaction holding it committed.
// synchronous=NORMAL in WAL mode writes the WAL at every commit without fsyncing it, so a
// process crash (kill -9, panic, OOM) loses no committed, hence no acknowledged, payload:
// the WAL is in the OS's page cache. An OS crash or power loss can lose the commits made
// since the WAL was last fsynced, which the checkpointer does every walCheckpointEvery
// (500 ms): payloads acked in that window would be lost. That is the window the hub's
// JetStream already has (SyncInterval 1 s: its own messages and acks of the last second
// are lost with the power), so synchronous=FULL (an fsync per transaction) would not
// close it for the hub as a whole; a deployment that needs power-loss durability needs
// it on both.
func OpenSQLite(ctx context.Context, path string, opts Options) (Store, error) {
	if path == "" || path == ":memory:" {
		return nil, errors.New("store: sqlite needs a file path (readers and the writer share it)")
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("store: sqlite: %w", err)
		}
	}
	if err := privateFiles(path); err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	// Every connection's settings, in order: busy_timeout first, so that the others wait
	// for a lock another process holds instead of failing.
	common := []pragma{
		{"busy_timeout", "10000"},
		{"journal_mode", "WAL"},
		{"synchronous", "NORMAL"},
		// No foreign key enforcement: with it, every identifier, history and relation row
		// costs SQLite a lookup of its CI (two per relation), about a tenth of the engine's
		// CPU per new CI (BenchmarkIngest/sqlite, both variants run side by side), for a
		// check that never fires: nothing deletes CIs (so no cascade runs), and the engine
		// writes a CI in the same transaction before any row referencing it. The same engine
		// code runs on PostgreSQL, which keeps the constraints, and the engine's and
		// the store's tests run on both, so a dangling reference would still fail them there.
		{"foreign_keys", "OFF"},
		{"cache_size", "-65536"}, // 64 MiB of page cache per connection
		{"temp_store", "MEMORY"},
	}
	// The writer never checkpoints: copying the WAL back and fsyncing the database would
	// stall the ingest that happens to cross the threshold. A background checkpointer
	// does it on its own connection (see checkpointer).
	w, err := openSQLiteDB(path, append(slices.Clone(common), pragma{"wal_autocheckpoint", "0"}), "immediate")
	if err != nil {
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	w.SetMaxOpenConns(1) // SQLite has one writer; more connections would only queue on its lock
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)

	cp, err := openSQLiteDB(path, common, "deferred")
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	cp.SetMaxOpenConns(1)

	r, err := openSQLiteDB(path, append(slices.Clone(common), pragma{"query_only", "1"}), "deferred")
	if err != nil {
		_ = w.Close()
		_ = cp.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	n := opts.MaxOpenConns
	if n <= 0 {
		n = 8
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)

	s := &sqlStore{
		d: dialect{
			name:               "sqlite",
			withoutRowID:       " WITHOUT ROWID",
			autoID:             "INTEGER PRIMARY KEY AUTOINCREMENT",
			maxParams:          32000, // SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32
			indexObjects:       true,
			rollbackOnConflict: true,
			retryable:          sqliteRetryable,
		},
		w:          w,
		r:          r,
		maxRetries: retries(opts),
		ins:        newInserts(),
		planCap:    defaultPlanCap,
	}
	s.texts = insertTexts(s.d, s.ins)
	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.prepareInserts(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.stopCheckpoints = startCheckpointer(cp)
	return &sqliteStore{s}, nil
}

// sqliteStore is the SQLite store: sqlStore with pipelined transactions (Pipelined).
type sqliteStore struct{ *sqlStore }

// privateFiles makes the database readable by its owner only: it holds what discovery learnt
// about every network. SQLite creates the -wal and -shm files with the database file's mode,
// so creating that file 0600 before SQLite does covers all three; files an older version
// left group- or world-readable are tightened.
func privateFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, st.Mode().Perm()&0o700); err != nil {
				return fmt.Errorf("make %s private: %w", p, err)
			}
		}
	}
	return nil
}

// walCheckpointEvery is how often the background checkpointer copies the WAL into the
// database. Between two, the WAL grows by what was written meanwhile.
const walCheckpointEvery = 500 * time.Millisecond

// startCheckpointer runs PASSIVE checkpoints, which never block the writer or readers,
// until the returned function is called; that function waits for the goroutine to end,
// runs a last checkpoint and closes db.
func startCheckpointer(db *sql.DB) func() error {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(walCheckpointEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				// A failed checkpoint is retried at the next tick; SQLite keeps the WAL.
				_, _ = db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)")
			}
		}
	}()
	return func() error {
		cancel()
		<-done
		_, err := db.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
		return errors.Join(err, db.Close())
	}
}

// pragma is one setting every connection of a pool runs when it is made (PRAGMA name = value).
type pragma struct{ name, value string }

func retries(opts Options) int {
	if opts.MaxRetries > 0 {
		return opts.MaxRetries
	}
	return 20
}
