package hub_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/outpost-dev/outpost/libs/bus"
)

// TestStoresOfRunningHub: every stream, bucket and object store a hub made is in the stores
// table (libs/bus/stores.go) and has the table's byte limit — read from the JetStream store
// on disk once the hub stopped. A service that makes a store outside the table fails here,
// told what to do.
func TestStoresOfRunningHub(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	r.status(t) // the services are up
	r.stop(t)
	table := map[string]bus.Store{}
	for _, s := range bus.Stores(r.cfg.Limits) {
		table[s.JetStreamName()] = s
	}
	metas, err := filepath.Glob(filepath.Join(dir, "jetstream", "jetstream", "*", "streams", "*", "meta.inf"))
	if err != nil || len(metas) < 20 {
		t.Fatalf("stores on disk: %d (%v)", len(metas), err)
	}
	for _, m := range metas {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Name     string `json:"name"`
			MaxBytes int64  `json:"max_bytes"`
		}
		if err := json.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		line, ok := table[cfg.Name]
		switch {
		case !ok:
			t.Errorf("the hub made %s, which is not in the stores table: add it to libs/bus/stores.go with its limits, discard policy and why, create it with bus.Stream/bus.KV/bus.ObjectStore, and list it in docs/architecture.md", cfg.Name)
		case cfg.MaxBytes <= 0:
			t.Errorf("%s has no byte limit on the server (the table says %d): create it from the table", cfg.Name, line.MaxBytes)
		}
	}
}
