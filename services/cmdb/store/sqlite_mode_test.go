package store_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-dev/outpost/services/cmdb/store"
)

// The database and its -wal and -shm files are readable by their owner only, new or not.
func TestSQLiteFilesArePrivate(t *testing.T) {
	for _, tc := range []struct {
		name string
		pre  os.FileMode // mode of a file left by an older version; 0: none
	}{{"new file", 0}, {"older world-readable file", 0o644}, {"older group-readable file", 0o640}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cmdb.db")
			if tc.pre != 0 {
				if err := os.WriteFile(path, nil, tc.pre); err != nil {
					t.Fatal(err)
				}
				_ = os.Chmod(path, tc.pre)
			}
			st, err := store.Open(context.Background(), "sqlite://"+path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			// Opening migrated the schema, so the WAL and shared-memory files exist now.
			for _, p := range []string{path, path + "-wal", path + "-shm"} {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatalf("%s: %v", filepath.Base(p), err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
				}
			}
		})
	}
}
