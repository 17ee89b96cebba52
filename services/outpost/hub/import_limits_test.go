package hub_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/importer"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// Runs beyond MaxRuns wait, queued, and go on once a slot frees: the importer and a real
// CMDB on an embedded bus, composed here as the hub composes them.
func TestImportRunsAreBounded(t *testing.T) {
	dir := t.TempDir()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "imp-limits", StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("imp-limits")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	if err := bus.Provision(ctx, js, hub.Topology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	cc := cmdb.DefaultConfig()
	cc.DSN = "sqlite://" + filepath.Join(dir, "cmdb.db")
	go func() { done <- cmdb.Run(ctx, cc, cmdb.Deps{NC: nc, JS: js, Logger: slog.New(slog.DiscardHandler)}) }()
	ic := importer.DefaultConfig()
	ic.MaxRuns = 1
	ic.TempDir = t.TempDir()
	go func() { done <- importer.Run(ctx, ic, importer.Deps{NC: nc, JS: js}) }()
	defer func() { cancel(); <-done; <-done }()

	const mapYAML = "name: m\ntarget: {class: linux_server}\ncoalesce: [serial_number]\nfields: {name: 'row.h', serial_number: 'row.s'}\n"
	startRun := func(prefix string, rows int) api.Run {
		t.Helper()
		var b strings.Builder
		b.WriteString("h,s\n")
		for i := range rows {
			fmt.Fprintf(&b, "%s-%d,%sSN%d\n", prefix, i, prefix, i)
		}
		var run api.Run
		eventually(t, 20*time.Second, func() error {
			objs, err := js.ObjectStore(ctx, api.UploadBucket)
			if err != nil {
				return err
			}
			if _, err := objs.PutString(ctx, prefix, b.String()); err != nil {
				return err
			}
			run, err = api.Start.Call(ctx, nc, api.StartRequest{Upload: prefix, Filename: prefix + ".csv", Map: mapYAML})
			return err
		})
		return run
	}
	first := startRun("first", 3000)
	second := startRun("second", 10)
	get := func(id string) api.Run {
		r, err := api.RunGet.Call(ctx, nc, api.RunRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := get(second.ID); r.State != api.StateQueued || get(first.ID).State == api.StateCompleted {
		t.Fatalf("second run %s while the first is %s: want it queued behind the one slot", r.State, get(first.ID).State)
	}
	for _, id := range []string{first.ID, second.ID} {
		eventually(t, 60*time.Second, func() error {
			if r := get(id); r.State != api.StateCompleted {
				return fmt.Errorf("run %s %s %s %+v", id, r.State, r.Reason, r.Counters)
			}
			return nil
		})
	}
	if f, s := get(first.ID), get(second.ID); f.Counters.Inserted != 3000 || s.Counters.Inserted != 10 || !f.Finished.Before(*s.Finished) {
		t.Fatalf("first %+v finished %v, second %+v finished %v", f.Counters, f.Finished, s.Counters, s.Finished)
	}
}
