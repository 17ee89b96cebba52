package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	api "github.com/outpost-dev/outpost/libs/api/orchestration"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
)

// harness: an embedded JetStream, a test bridge for site "lab" running http_request probes
// with net/http (the real bridge runs in the outpost e2e tests: a service does not import
// another service), a target web server on 127.0.0.1 counting what it executes, a CMDB
// stand-in answering svc.cmdb.ls/get/ingest, and a fake clock.
type harness struct {
	t      testing.TB
	srv    *bus.Server
	ctx    context.Context
	nc     *nats.Conn
	js     jetstream.JetStream
	clock  *clock.Fake
	web    *targetServer
	cmdb   *fakeCMDB
	probes map[string]int // probe id → times the bridge ran it
	sites  map[string]int // probe id@site → times the bridge took it from the site's queue
	mu     sync.Mutex
	// ending: the test is over; probes released by the target's shutdown answer into a
	// closing connection
	ending atomic.Bool
	// svc is the replica startService started last
	svc *service
	// armed: the time each run's goroutine last went to sleep until
	armedMu sync.Mutex
	armed   map[string]time.Time
	// cronAt: the slot the cron loop of the latest replica sleeps until
	cronAt time.Time
	// beforeFilter is the next replica's hook before it sets the triggers consumer's filter
	beforeFilter func(ctx context.Context, filters []string)
}

func eventually(t testing.TB, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newHarness(t testing.TB) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := bus.StartServer(bus.ServerConfig{Name: "orch-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("orchestration-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.Limits{}).WithConsumers(Consumers()...)); err != nil {
		t.Fatal(err)
	}
	// A probe's wire deadline is checked by NATS (TTL) and the bridge against real time,
	// so the fake clock starts at the real now; no test asserts a date or a duration.
	h := &harness{t: t, srv: srv, ctx: ctx, nc: nc, js: js, clock: clock.NewFake(time.Now().UTC()), probes: map[string]int{}, sites: map[string]int{}, armed: map[string]time.Time{}}
	h.web = newTargetServer(t)
	h.cmdb = newFakeCMDB(ctx, t, nc)
	serveSites(ctx, t, nc)
	h.startBridge()
	t.Cleanup(func() { h.ending.Store(true) }) // runs first
	return h
}

// startService runs one replica until the returned stop is called (it waits for Run).
func (h *harness) startService(replica string) (stop func()) {
	ctx, cancel := context.WithCancel(h.ctx)
	cfg := DefaultConfig()
	cfg.Replica = replica
	cfg.ActiveLease = time.Hour // renewed on the fake clock: never lost during a test
	done := make(chan error, 1)
	s, err := newService(ctx, cfg, Deps{NC: h.nc, JS: h.js, Clock: h.clock})
	if err != nil {
		h.t.Fatal(err)
	}
	h.svc = s
	s.beforeFilter = h.beforeFilter
	s.cronArmed = func(at time.Time) {
		h.armedMu.Lock()
		h.cronAt = at
		h.armedMu.Unlock()
	}
	s.armed = func(run string, at time.Time) {
		h.armedMu.Lock()
		h.armed[run] = at
		h.armedMu.Unlock()
	}
	go func() { done <- s.serveWhenActive(ctx) }()
	// serving once its endpoints answer
	eventually(h.t, 10*time.Second, func() error {
		var out api.ListResponse
		return bus.Request(h.ctx, h.nc, Service, api.List.Name, api.ListRequest{}, &out)
	})
	return func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	}
}

// startCrashable runs one replica on its own connection; kill stops it as a crash does:
// its connection is closed first, so nothing it still had in memory reaches the bus. crash,
// when set, is the replica's crash-point hook.
func (h *harness) startCrashable(replica string, crash func(ctx context.Context, point string)) (kill func()) {
	h.t.Helper()
	nc, err := h.srv.Connect("orchestration-" + replica)
	if err != nil {
		h.t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	cfg := DefaultConfig()
	cfg.Replica = replica
	cfg.ActiveLease = time.Hour
	s, err := newService(ctx, cfg, Deps{NC: nc, JS: js, Clock: h.clock})
	if err != nil {
		h.t.Fatal(err)
	}
	s.crashPoint = crash
	done := make(chan error, 1)
	go func() { done <- s.serveWhenActive(ctx) }()
	eventually(h.t, 10*time.Second, func() error {
		var out api.ListResponse
		return bus.Request(h.ctx, h.nc, Service, api.List.Name, api.ListRequest{}, &out)
	})
	return func() {
		nc.Close()
		cancel()
		<-done // whatever it returns: its connection is gone
	}
}

// advance moves the fake clock by d once the run's goroutine sleeps until at (a retry's
// NextAt, an attempt's deadline): never while it is between reading the clock and arming
// its timer.
func (h *harness) advance(run string, at time.Time, d time.Duration) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() error {
		h.armedMu.Lock()
		defer h.armedMu.Unlock()
		if !h.armed[run].Equal(at) {
			return fmt.Errorf("run %s sleeps until %s, not %s", run, h.armed[run], at)
		}
		return nil
	})
	h.clock.Advance(d)
}

func (h *harness) call(op string, req, resp any) error {
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	return bus.Request(ctx, h.nc, Service, op, req, resp)
}

func (h *harness) add(yaml string) api.AddResponse {
	h.t.Helper()
	var out api.AddResponse
	if err := h.call(api.Add.Name, api.AddRequest{File: "test.yaml", YAML: yaml}, &out); err != nil {
		h.t.Fatalf("add: %v", err)
	}
	return out
}

func (h *harness) run(name string, inputs map[string]any) api.Run {
	h.t.Helper()
	var out api.Run
	if err := h.call(api.RunStart.Name, api.RunRequest{Name: name, RunOptions: api.RunOptions{Inputs: inputs}}, &out); err != nil {
		h.t.Fatalf("run: %v", err)
	}
	return out
}

// output reads a step's whole output with run_output, page by page.
func (h *harness) output(run, step string) []byte {
	h.t.Helper()
	var all []byte
	req := api.OutputRequest{Run: run, Step: step}
	for pages := 0; ; pages++ {
		var out api.OutputResponse
		if err := h.call(api.RunOutput.Name, req, &out); err != nil {
			h.t.Fatalf("run_output: %v", err)
		}
		if out.Offset != int64(len(all)) || pages > 1000 {
			h.t.Fatalf("run_output page at %d, want %d", out.Offset, len(all))
		}
		all = append(all, out.Data...)
		if out.Next == 0 {
			return all
		}
		req.Offset = out.Next
	}
}

func (h *harness) get(id string) api.Run {
	h.t.Helper()
	var out api.Run
	if err := h.call(api.RunGet.Name, api.RunIDRequest{ID: id}, &out); err != nil {
		h.t.Fatalf("get: %v", err)
	}
	return out
}

// waitStep polls until the run's step is in state (and the run's attempts are on record).
func (h *harness) waitStep(id, step, state string, attempts int) api.Run {
	h.t.Helper()
	var r api.Run
	eventually(h.t, 15*time.Second, func() error {
		r = h.get(id)
		st := r.Step(step)
		if st.State != state || len(st.Attempts) != attempts {
			return fmt.Errorf("step %s is %s after %d attempts (%s), want %s after %d; run %s %s", step, st.State, len(st.Attempts), st.Reason, state, attempts, r.State, r.Reason)
		}
		return nil
	})
	return r
}

func (h *harness) waitRun(id, state string) api.Run {
	h.t.Helper()
	var r api.Run
	eventually(h.t, 15*time.Second, func() error {
		r = h.get(id)
		if r.State != state {
			b, _ := json.Marshal(r.Steps)
			return fmt.Errorf("run is %s (%s), want %s; steps %s", r.State, r.Reason, state, b)
		}
		return nil
	})
	return r
}

// startBridge pulls the site's probes and runs http_request ones with net/http, each in its
// own goroutine (a probe to /hold keeps running until released).
func (h *harness) startBridge() {
	t := h.t
	pub := bus.NewPublisher(h.js, envelope.AgentSource("lab", "br-test"), nil)
	cons, err := h.js.CreateOrUpdateConsumer(h.ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: "test-bridge",
		FilterSubject: "probe.>", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		_, p, err := envelope.DecodeInto[*envelope.Probe](m.Headers(), m.Data())
		if err != nil {
			t.Errorf("test bridge: %v", err)
			return
		}
		h.mu.Lock()
		h.probes[p.ID]++
		h.sites[p.ID+"@"+p.Site]++
		h.mu.Unlock()
		go h.execute(pub, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

func (h *harness) sentTo(probe, site string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sites[probe+"@"+site]
}

func (h *harness) ran(probe string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.probes[probe]
}

func (h *harness) execute(pub *bus.Publisher, p *envelope.Probe) {
	var params httprequest.Params
	_ = json.Unmarshal(p.Params, &params)
	r := &envelope.Result{ID: p.ID + "-0", Probe: p.ID, Run: p.Run, App: p.App, Agent: "br-test", Site: p.Site, Kind: p.Kind,
		Seq: 0, Final: true, Started: time.Now().UTC()}
	if p.Kind != httprequest.Kind {
		r.Status, r.Error = envelope.StatusError, &envelope.Error{Code: "unsupported", Message: "test bridge runs http_request only"}
	} else {
		url := fmt.Sprintf("http://%s%s", net.JoinHostPort(p.Target, strconv.Itoa(params.Port)), params.Path)
		resp, err := http.Get(url)
		if err != nil {
			r.Status, r.Error = envelope.StatusError, &envelope.Error{Code: "connect", Message: err.Error()}
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.Status = envelope.StatusOK
			r.Data, _ = json.Marshal(httprequest.Result{URL: url, Method: "GET", Status: resp.StatusCode, StatusText: http.StatusText(resp.StatusCode),
				Headers: resp.Header, Body: probes.Blob{Text: string(body), Size: int64(len(body))}})
		}
	}
	r.Finished = time.Now().UTC()
	if _, err := pub.Publish(h.ctx, bus.ResultSubject(p.App, p.Site, p.Kind, r.Agent), envelope.Meta{ID: r.ID, Run: p.Run}, r); err != nil && !h.ending.Load() {
		h.t.Errorf("test bridge: publish result: %v", err)
	}
}

// targetServer is the target of the steps: it counts every request it executes per path.
// /flaky answers 503 twice then 200; /hang never answers (until the test ends); /hold
// answers once release is closed.
type targetServer struct {
	*httptest.Server
	mu      sync.Mutex
	hits    map[string]int
	release chan struct{}
	// /slow/...: each takes a while; running and peak count them in flight
	running, peak int
}

func newTargetServer(t testing.TB) *targetServer {
	s := &targetServer{hits: map[string]int{}, release: make(chan struct{})}
	done := make(chan struct{})
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		n := s.hits[r.URL.Path]
		s.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/slow/") {
			s.mu.Lock()
			s.running++
			s.peak = max(s.peak, s.running)
			s.mu.Unlock()
			time.Sleep(20 * time.Millisecond) // the target's work: others arrive meanwhile
			s.mu.Lock()
			s.running--
			s.mu.Unlock()
		}
		switch r.URL.Path {
		case "/flaky":
			if n <= 2 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
		case "/big":
			fmt.Fprint(w, strings.Repeat("0123456789abcdef", 700<<10/16))
			return
		case "/hang":
			select {
			case <-done:
			case <-r.Context().Done():
			}
			return
		case "/hold":
			select {
			case <-s.release:
			case <-done:
			}
		}
		fmt.Fprintf(w, "ok %s %d", r.URL.Path, n)
	}))
	t.Cleanup(func() { close(done); s.Close() })
	return s
}

func (s *targetServer) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *targetServer) hostPort() (string, string) {
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "http://"))
	return host, port
}

// fakeCMDB answers svc.cmdb.ls/get/ingest over one CI and records the payloads (the real
// CMDB runs in the outpost e2e tests).
type fakeCMDB struct {
	mu       sync.Mutex
	ci       map[string]any // attributes
	sources  map[string]string
	payloads []envelope.CIPayload
}

func newFakeCMDB(ctx context.Context, t testing.TB, nc *nats.Conn) *fakeCMDB {
	c := &fakeCMDB{ci: map[string]any{"name": "web1", "ip_address": "127.0.0.9", "os": "Debian"},
		sources: map[string]string{"name": "discovery", "ip_address": "discovery", "os": "discovery"}}
	ci := func() cmdbapi.CI {
		return cmdbapi.CI{ID: "ci-1", Class: "linux_server", Name: "web1", Attributes: maps.Clone(c.ci)}
	}
	svc, err := bus.AddService(ctx, nc, bus.ServiceConfig{Name: cmdbapi.Service, Version: "0.1.0", Endpoints: map[string]bus.Endpoint{
		cmdbapi.List.Name: cmdbapi.List.Handle(func(_ context.Context, r cmdbapi.ListRequest) (cmdbapi.ListResponse, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			for k, v := range r.Filters {
				if fmt.Sprint(c.ci[k]) != v {
					return cmdbapi.ListResponse{Items: []cmdbapi.CI{}}, nil
				}
			}
			return cmdbapi.ListResponse{Items: []cmdbapi.CI{ci()}}, nil
		}),
		cmdbapi.Get.Name: cmdbapi.Get.Handle(func(context.Context, cmdbapi.IDRequest) (cmdbapi.Detail, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			d := cmdbapi.Detail{CI: ci(), Sources: map[string]cmdbapi.AttrSource{}}
			for k, v := range c.sources {
				d.Sources[k] = cmdbapi.AttrSource{Source: v}
			}
			return d, nil
		}),
		cmdbapi.Ingest.Name: cmdbapi.Ingest.Handle(func(_ context.Context, r cmdbapi.IngestRequest) (cmdbapi.Outcome, error) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.payloads = append(c.payloads, r.Payload)
			var changed []string
			for k, v := range r.Payload.Items[0].Attributes {
				if fmt.Sprint(c.ci[k]) != fmt.Sprint(v) {
					c.ci[k], c.sources[k] = v, r.Payload.Source
					changed = append(changed, k)
				}
			}
			if len(changed) == 0 {
				return cmdbapi.Outcome{Unchanged: []cmdbapi.Change{{ID: "ci-1", Class: "linux_server"}}}, nil
			}
			return cmdbapi.Outcome{Updated: []cmdbapi.Change{{ID: "ci-1", Class: "linux_server", Attributes: changed}}}, nil
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	return c
}

// serveSites answers svc.agents.site_ls with two sites for site_of: lab holds 127.0.0.0/8
// but excludes 127.0.0.3, edge holds 127.0.0.2/32 (more specific than lab's range).
func serveSites(ctx context.Context, t testing.TB, nc *nats.Conn) {
	svc, err := bus.AddService(ctx, nc, bus.ServiceConfig{Name: agentsapi.Service, Version: "0.1.0", Endpoints: map[string]bus.Endpoint{
		agentsapi.SiteList.Name: agentsapi.SiteList.Handle(func(context.Context, page.Request) (agentsapi.SiteListReply, error) {
			return agentsapi.SiteListReply{Sites: []agentsapi.Site{
				{Name: "lab", Ranges: []string{"127.0.0.0/8"}, Exclude: []string{"127.0.0.3"}},
				{Name: "edge", Ranges: []string{"127.0.0.2/32"}},
			}}, nil
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
}
