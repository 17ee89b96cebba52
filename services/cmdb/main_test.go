package cmdb_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/cmdb/internal/pgtest"
	"github.com/outpost-dev/outpost/services/cmdb/internal/storetest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if err := goleak.Find(
			// nats-server keeps a few process-wide goroutines once any server has run.
			goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).syncBlocks"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.init.0.func1"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "leaked goroutines: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// hub is one embedded JetStream server per test.
type hub struct {
	srv *bus.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	// clock, when set, is the services' clock (nil: the real one)
	clock clock.Clock
}

// newHub starts a server. provisioned: the hub's topology with the CMDB consumers, as
// `outpost up` makes it; otherwise a bare server, where the service provisions for itself.
func newHub(t testing.TB, provisioned bool) *hub {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "test", StoreDir: t.TempDir(), SyncInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	h := &hub{srv: srv}
	h.nc, h.js = h.conn(t, "test")
	if provisioned {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		topo := bus.DefaultTopology(bus.DefaultLimits()).WithConsumers(cmdb.Consumers(cmdb.DefaultPartitions)...)
		if err := bus.Provision(ctx, h.js, topo); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func (h *hub) conn(t testing.TB, name string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := h.srv.Connect(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testConfig is the default configuration on a backend's database.
func testConfig(b storetest.Backend) cmdb.Config {
	cfg := cmdb.DefaultConfig()
	cfg.DSN = b.DSN
	cfg.Version = "0.0.0-test"
	return cfg
}

func sqliteBackend(t testing.TB) storetest.Backend {
	return storetest.Backend{Name: "sqlite", DSN: "sqlite://" + filepath.Join(t.TempDir(), "cmdb.db")}
}

// start runs a CMDB replica on its own connection until the test ends or stop is called;
// it fails the test if Run returns an error.
func (h *hub) start(t testing.TB, cfg cmdb.Config) (stop func()) {
	t.Helper()
	nc, js := h.conn(t, "cmdb")
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- cmdb.Run(ctx, cfg, cmdb.Deps{NC: nc, JS: js, Ready: func() { close(ready) }, Clock: h.clock})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("cmdb.Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("cmdb did not become ready in 30 s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("cmdb.Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("cmdb.Run did not return within 20 s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// publish sends a payload to the partition IngestSubject picks, as a producer would.
func (h *hub) publish(t testing.TB, p envelope.CIPayload) {
	t.Helper()
	h.publishOn(t, cmdb.IngestSubject(p, cmdb.DefaultPartitions), p)
}

func (h *hub) publishOn(t testing.TB, subject string, p envelope.CIPayload) {
	t.Helper()
	pub := bus.NewPublisher(h.js, envelope.ServiceSource("discovery"), nil)
	if _, err := pub.Publish(context.Background(), subject, envelope.Meta{}, &p); err != nil {
		t.Fatal(err)
	}
}

// call sends a svc.cmdb request and decodes the answer; it fails the test on an error.
func call[T any](t testing.TB, nc *nats.Conn, op string, req any) T {
	t.Helper()
	var resp T
	if err := request(nc, op, req, &resp); err != nil {
		t.Fatalf("svc.cmdb.%s %+v: %v", op, req, err)
	}
	return resp
}

func request(nc *nats.Conn, op string, req, resp any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return bus.Request(ctx, nc, cmdb.Name, op, req, resp)
}

// callErr sends a request that must fail, and returns its ServiceError.
func callErr(t testing.TB, nc *nats.Conn, op string, req any) *bus.ServiceError {
	t.Helper()
	var resp json.RawMessage
	err := request(nc, op, req, &resp)
	var se *bus.ServiceError
	if !errors.As(err, &se) {
		t.Fatalf("svc.cmdb.%s %+v: want a service error, got %v (%s)", op, req, err, resp)
	}
	return se
}

// eventually polls f until it returns nil or the time is up.
func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

// drained waits until the CMDB stream is empty and nothing is in flight: every payload
// published so far has been ingested or dead-lettered.
func (h *hub) drained(t testing.TB, d time.Duration) {
	t.Helper()
	eventually(t, d, func() error {
		ctx := context.Background()
		st, err := h.js.Stream(ctx, bus.StreamCMDB)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d payloads still in the CMDB stream", info.State.Msgs)
		}
		return nil
	})
}

// msgs returns every message of a stream.
func (h *hub) msgs(t testing.TB, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st, err := h.js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// changes returns the change events published so far, with their ce-ids.
func (h *hub) changes(t testing.TB) []change {
	t.Helper()
	var out []change
	for _, m := range h.msgs(t, bus.StreamChanges) {
		if strings.HasPrefix(m.Subject, bus.IngestedSubject("")) {
			continue // receipts, not changes
		}
		meta, c, err := envelope.DecodeInto[*envelope.Change](m.Header, m.Data)
		if err != nil {
			t.Fatalf("change event seq %d: %v", m.Sequence, err)
		}
		if m.Subject != bus.ChangeSubject(c.Class) {
			t.Errorf("change of a %s on %s", c.Class, m.Subject)
		}
		out = append(out, change{ID: meta.ID, Change: *c})
	}
	return out
}

// receipts returns the ingest receipts published so far, oldest first.
func (h *hub) receipts(t testing.TB) []envelope.Ingested {
	t.Helper()
	var out []envelope.Ingested
	for _, m := range h.msgs(t, bus.StreamChanges) {
		if !strings.HasPrefix(m.Subject, bus.IngestedSubject("")) {
			continue
		}
		_, r, err := envelope.DecodeInto[*envelope.Ingested](m.Header, m.Data)
		if err != nil {
			t.Fatalf("receipt seq %d: %v", m.Sequence, err)
		}
		if m.Subject != bus.IngestedSubject(r.Source) {
			t.Errorf("receipt of a %s payload on %s", r.Source, m.Subject)
		}
		out = append(out, *r)
	}
	return out
}

type change struct {
	ID string
	envelope.Change
}
