package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/page"
)

type harness struct {
	t        *testing.T
	srv      *bus.Server
	nc       *nats.Conn
	js       jetstream.JetStream
	hub      nkeys.KeyPair
	bridge   *testBridge
	lab      *lab.Lab
	dataDir  string
	mu       sync.Mutex
	payloads []*envelope.CIPayload
	// replicaLog is what the in-process replicas logged: shown when the test failed.
	replicaLog syncBuffer
}

func eventually(t *testing.T, d time.Duration, f func() error) {
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
		time.Sleep(100 * time.Millisecond)
	}
}

// newHarness starts an embedded JetStream, the lab on labRange, a fake agents service with
// one approved bridge for site "lab", the test bridge, and a CMDB stream reader.
func newHarness(ctx context.Context, t *testing.T, labRange string, hosts int) *harness {
	// listening on loopback too: the fencing test's frozen replica is a child process
	srv, err := bus.StartServer(bus.ServerConfig{Name: "disc-test", StoreDir: t.TempDir(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("discovery-test")
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
	h := &harness{t: t, srv: srv, nc: nc, js: js, dataDir: t.TempDir()}
	t.Cleanup(func() {
		if t.Failed() && h.replicaLog.String() != "" {
			t.Logf("in-process replicas' log:\n%s", h.replicaLog.String())
		}
	})
	h.hub, _ = nkeys.CreateCurveKeys()
	bkey, _ := nkeys.CreateCurveKeys()
	bpub, _ := bkey.PublicKey()
	svc, err := bus.AddService(ctx, nc, bus.ServiceConfig{Name: "agents", Version: "0.1.0", Endpoints: map[string]bus.Endpoint{
		"site_ls": bus.JSON(func(context.Context, page.Request) (any, error) {
			return map[string]any{"sites": []site{{Name: "lab", Ranges: []string{labRange}}}}, nil
		}),
		"ls": bus.JSON(func(context.Context, page.Request) (any, error) {
			return map[string]any{"agents": []agentView{{Name: "br-test", Site: "lab", State: "approved", XKey: bpub}}}, nil
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	h.bridge = startTestBridge(ctx, t, js, "lab", bkey)
	if hosts > 0 {
		l, err := lab.Start(ctx, lab.Config{Range: labRange, Hosts: hosts, Seed: 7})
		if err != nil {
			t.Skipf("lab cannot start here (needs privileged ports on 127.77.x.y): %v", err)
		}
		t.Cleanup(func() { l.Close() })
		h.lab = l
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamCMDB, jetstream.ConsumerConfig{Durable: "test-cmdb", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	// The CMDB's part as discovery sees it (the real one runs in the e2e tests): a receipt per
	// payload, every item created the first time a payload id is seen, unchanged after.
	receipts := bus.NewPublisher(js, envelope.ServiceSource("cmdb"), nil)
	seen := map[string]bool{}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		meta, p, err := envelope.DecodeInto[*envelope.CIPayload](m.Headers(), m.Data())
		if err != nil {
			_ = m.Ack()
			t.Errorf("payload: %v", err)
			return
		}
		h.mu.Lock()
		h.payloads = append(h.payloads, p)
		r := &envelope.Ingested{Payload: meta.ID, Source: p.Source, Items: len(p.Items), Time: time.Now()}
		if seen[meta.ID] {
			r.Unchanged = len(p.Items)
		} else {
			r.Created = len(p.Items)
		}
		seen[meta.ID] = true
		h.mu.Unlock()
		if _, err := receipts.Publish(ctx, bus.IngestedSubject(p.Source), envelope.Meta{Run: meta.Run}, r); err != nil {
			t.Errorf("receipt: %v", err)
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return h
}

// startService runs the discovery service until the returned stop is called.
func (h *harness) startService(ctx context.Context) (stop func()) {
	stop = h.startReplica(ctx, "", 0)
	eventually(h.t, 10*time.Second, func() error {
		return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil)
	})
	return stop
}

// startReplica runs a replica of the discovery service (a random name when empty, the
// default lease when 0) without waiting for it to serve.
func (h *harness) startReplica(ctx context.Context, replica string, lease time.Duration) (stop func()) {
	return h.startReplicaWith(ctx, replica, lease, DefaultConfig().ShareRuns)
}

// startSharedReplica starts a replica with ShareRuns on (every replica active).
func (h *harness) startSharedReplica(ctx context.Context, replica string, lease time.Duration) (stop func()) {
	return h.startReplicaWith(ctx, replica, lease, true)
}

// startStandbyReplica starts a replica with ShareRuns off (active/standby).
func (h *harness) startStandbyReplica(ctx context.Context, replica string, lease time.Duration) (stop func()) {
	return h.startReplicaWith(ctx, replica, lease, false)
}

func (h *harness) startReplicaWith(ctx context.Context, replica string, lease time.Duration, shared bool) (stop func()) {
	cfg := DefaultConfig()
	cfg.ShareRuns = shared
	cfg.DataDir = h.dataDir
	cfg.Tick = 50 * time.Millisecond
	cfg.Replica = replica
	if lease > 0 {
		cfg.ActiveLease = lease
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(&h.replicaLog, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", replica)
	go func() { done <- Run(cctx, cfg, Deps{NC: h.nc, JS: h.js, CurveKey: h.hub, Logger: log}) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("discovery Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			h.t.Error("discovery Run did not return")
		}
	}
}

func (h *harness) request(ctx context.Context, op string, req, resp any) {
	h.t.Helper()
	if err := bus.Request(ctx, h.nc, Service, op, req, resp); err != nil {
		h.t.Fatalf("%s: %v", op, err)
	}
}

func (h *harness) waitRun(ctx context.Context, id string, d time.Duration) RunView {
	h.t.Helper()
	var v RunView
	eventually(h.t, d, func() error {
		v = RunView{}
		// each ask bounded: a frozen replica still in the queue group may get it
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := bus.Request(rctx, h.nc, Service, "run_get", IDRequest{ID: id}, &v); err != nil {
			return err
		}
		if !terminalState(v.State) {
			return fmt.Errorf("run %s is %s (%+v)", id, v.State, v.Counters)
		}
		return nil
	})
	return v
}

// addLabCredentials adds the lab's credentials except the ones skip names (by username or
// community), and one wrong SSH credential.
func (h *harness) addLabCredentials(ctx context.Context, skip string) {
	seen := map[string]bool{}
	n := 0
	add := func(r CredentialAddRequest) {
		key := r.Type + r.Username + r.Secret
		if seen[key] {
			return
		}
		seen[key] = true
		n++
		r.Name, r.Site = fmt.Sprintf("%s-%d", r.Type, n), "lab"
		h.request(ctx, "credentials_add", r, nil)
	}
	add(CredentialAddRequest{Type: "ssh", Username: "admin", Secret: "wrong-password"})
	for _, host := range h.lab.Manifest().Hosts {
		if c := host.Credentials.SSH; c != nil && c.Username != skip {
			add(CredentialAddRequest{Type: "ssh", Username: c.Username, Secret: c.Password})
		}
		if c := host.Credentials.SNMP; c != nil {
			add(CredentialAddRequest{Type: "snmp", Secret: c.Community})
		}
	}
}

// TestDiscoveryOfTheLab runs a discovery of a lab through the service and compares what
// was sent to the CMDB with the manifest; one host's SSH credential is missing.
func TestDiscoveryOfTheLab(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.122.0/24", 30)
	stop := h.startService(ctx)
	defer stop()
	h.addLabCredentials(ctx, "ops")

	var cl struct {
		Credentials []Credential `json:"credentials"`
	}
	h.request(ctx, "credentials_ls", struct{}{}, &cl)
	if len(cl.Credentials) < 4 {
		t.Fatalf("credentials_ls: %+v", cl)
	}

	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	v := h.waitRun(ctx, st.Run, 60*time.Second)
	if v.State != StateCompleted {
		t.Fatalf("run %s: %s (%s) errors %v", st.Run, v.State, v.Reason, v.Errors)
	}
	t.Logf("counters %+v", v.Counters)
	// every host payload's receipt is counted before the run completes (LLDP relation
	// payloads carry no host's CIs and are not)
	if c := v.Counters; c.Ingested != c.Classified || c.CIsCreated == 0 || c.CIsCreated+c.CIsUpdated+c.CIsUnchanged > c.CIsSent {
		t.Errorf("receipts: %d of %d classified hosts, CIs %d created %d updated %d unchanged of %d sent",
			c.Ingested, c.Classified, c.CIsCreated, c.CIsUpdated, c.CIsUnchanged, c.CIsSent)
	}
	m := h.lab.Manifest()
	classes := map[string]string{}
	for _, hb := range v.Hosts {
		classes[hb.IP] = hb.Class
	}
	want := map[string]string{"ldap_directory": "ldap_directory"}
	for _, mh := range m.Hosts {
		w := mh.Class
		if x, ok := want[w]; ok {
			w = x
		}
		if classes[mh.IP] != w {
			t.Errorf("%s (%s): class %q, manifest %q", mh.IP, mh.Name, classes[mh.IP], mh.Class)
		}
	}
	// the host log says which bridge ran each probe (runs show prints it)
	for _, mh := range m.Hosts {
		if mh.Class == "" {
			continue // dead addresses are not kept
		}
		var hv RunView
		h.request(ctx, "run_get", IDRequest{ID: st.Run, Host: mh.IP}, &hv)
		for _, l := range hv.Host.Log {
			if l.Step == StepScan && l.Bridge != "br-test" {
				t.Errorf("%s: scan log entry without the bridge that ran it: %+v", mh.IP, l)
			}
		}
	}
	// payloads: one per classified host plus LLDP links; none for dead addresses
	h.mu.Lock()
	roots := map[string]envelope.CIItem{}
	links := 0
	for _, p := range h.payloads {
		if len(p.Relations) > 0 && p.Relations[0].Type == "connected_to" {
			links++
			// the devices, and their two ports (adapters), are connected_to each other
			if len(p.Relations) != 2 || p.Relations[1].From != "pa" || p.Relations[1].To != "pb" {
				t.Errorf("link payload without the ports' connected_to: %+v", p.Relations)
			}
			continue
		}
		roots[p.Items[0].NativeKey] = p.Items[0]
	}
	h.mu.Unlock()
	for _, mh := range m.Hosts {
		_, ok := roots[mh.IP]
		if ok != (mh.Class != "") {
			t.Errorf("%s (%q): payload sent %t", mh.IP, mh.Class, ok)
		}
		if mh.Class == "linux_server" && ok {
			if got := roots[mh.IP].Attributes["os"]; mh.Credentials.SSH.Username != "ops" && got != mh.OS {
				t.Errorf("%s: os %v, manifest %s", mh.IP, got, mh.OS)
			}
		}
	}
	if links != len(m.Neighbours) {
		t.Errorf("LLDP links sent %d, manifest has %d neighbours", links, len(m.Neighbours))
		for _, mh := range m.Hosts {
			if mh.SNMP {
				var hv RunView
				h.request(ctx, "run_get", IDRequest{ID: st.Run, Host: mh.IP}, &hv)
				b, _ := json.Marshal(hv.Host.Log)
				t.Logf("%s %s lldp %d: %s", mh.IP, mh.Class, len(hv.Host.LLDP), b)
			}
		}
	}
	// the host whose credential is missing: classified by ports, and its log says why
	for _, mh := range m.Hosts {
		if mh.Credentials.SSH == nil || mh.Credentials.SSH.Username != "ops" {
			continue
		}
		var hv RunView
		h.request(ctx, "run_get", IDRequest{ID: st.Run, Host: mh.IP}, &hv)
		if hv.Host == nil || !hv.Host.ByPorts || len(hv.Host.Failed["ssh"]) == 0 {
			t.Errorf("host %s: %+v", mh.IP, hv.Host)
		}
		b, _ := json.Marshal(hv.Host.Log)
		if !strings.Contains(string(b), "every SSH credential failed") {
			t.Errorf("host log of %s does not say the credentials failed: %s", mh.IP, b)
		}
	}

	// a second run: affinity puts the credential that worked first
	h.mu.Lock()
	first := len(h.payloads)
	h.mu.Unlock()
	sshBefore := h.bridge.count("ssh_exec")
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	v2 := h.waitRun(ctx, st.Run, 60*time.Second)
	if v2.State != StateCompleted || v2.Counters.PayloadsSent != v.Counters.PayloadsSent {
		t.Errorf("second run: %s %+v, first %+v", v2.State, v2.Counters, v.Counters)
	}
	found := map[string]bool{}
	for _, hb := range v2.Hosts {
		found[hb.IP] = true
	}
	for _, mh := range m.Hosts {
		if mh.Class != "" && !found[mh.IP] {
			t.Errorf("second run missed %s (%s, snmp %t, tcp %v)", mh.IP, mh.Class, mh.SNMP, mh.OpenTCP)
		}
	}
	h.mu.Lock()
	second := len(h.payloads) - first
	h.mu.Unlock()
	if second != first {
		t.Errorf("second run sent %d payloads, first %d", second, first)
	}
	if n := h.bridge.count("ssh_exec") - sshBefore; n == 0 {
		t.Errorf("second run ran no ssh_exec")
	}
}

// TestRunSurvivesRestart stops the service mid-run and starts a new one on the same bus.
func TestRunSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.123.0/24", 20)
	stop := h.startService(ctx)
	h.addLabCredentials(ctx, "")
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	eventually(t, 30*time.Second, func() error {
		var v RunView
		if err := bus.Request(ctx, h.nc, Service, "run_get", IDRequest{ID: st.Run, Host: "-"}, &v); err != nil {
			return err
		}
		if v.State == StateQueued || v.State == StateScanning {
			return fmt.Errorf("still %s", v.State)
		}
		return nil
	})
	stop()
	stop = h.startService(ctx)
	defer stop()
	v := h.waitRun(ctx, st.Run, 60*time.Second)
	if v.State != StateCompleted {
		t.Fatalf("after restart: %s %s %v", v.State, v.Reason, v.Errors)
	}
	alive := 0
	for _, mh := range h.lab.Manifest().Hosts {
		if mh.Class != "" {
			alive++
		}
	}
	if v.Counters.Classified != alive {
		t.Errorf("classified %d, manifest has %d live hosts; %+v; errors %v; log %v", v.Counters.Classified, alive, v.Counters, v.Errors, v.Log)
	}
}

// TestCancelAndMaxRunTime: a canceled run stops; a run past its max run time fails.
func TestCancelAndMaxRunTime(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.233.0/24", 0)
	stop := h.startService(ctx)
	defer stop()
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab", Ranges: []string{"127.77.233.0/28"}}, &st)
	h.request(ctx, "cancel", IDRequest{ID: st.Run}, nil)
	if v := h.waitRun(ctx, st.Run, 10*time.Second); v.State != StateCanceled {
		t.Fatalf("state %s", v.State)
	}
	h.request(ctx, "start", StartRequest{Site: "lab", Ranges: []string{"127.77.233.0/28"}, MaxRunTime: "1ns"}, &st)
	if v := h.waitRun(ctx, st.Run, 10*time.Second); v.State != StateFailed || !strings.Contains(v.Reason, "max run time") {
		t.Fatalf("state %s %s", v.State, v.Reason)
	}
	err := bus.Request(ctx, h.nc, Service, "start", StartRequest{Site: "nowhere"}, nil)
	if se, ok := err.(*bus.ServiceError); !ok || se.Code != 404 {
		t.Fatalf("unknown site: %v", err)
	}
}

// TestCredentialsEncryptedAtRest: the secret is nowhere in the KV bucket's bytes, ls never
// shows it, and the key file is 0600.
func TestCredentialsEncryptedAtRest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.234.0/24", 0)
	stop := h.startService(ctx)
	defer stop()
	const secret = "S3cr3t-Passw0rd-xyzzy"
	h.request(ctx, "credentials_add", CredentialAddRequest{Name: "linux-root", Type: "ssh", Site: "lab", Username: "root", Secret: secret,
		Fields: map[string]string{"priv_password": "AnotherSecret-42"}}, nil)
	kv, err := h.js.KeyValue(ctx, KVCredentials)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "linux-root")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(e.Value(), []byte(secret)) || bytes.Contains(e.Value(), []byte("AnotherSecret-42")) {
		t.Fatalf("secret in clear in KV: %s", e.Value())
	}
	var raw json.RawMessage
	h.request(ctx, "credentials_ls", struct{}{}, &raw)
	if bytes.Contains(raw, []byte(secret)) || !bytes.Contains(raw, []byte("linux-root")) {
		t.Fatalf("credentials_ls: %s", raw)
	}
	fi, err := os.Stat(filepath.Join(h.dataDir, "credentials.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	err = bus.Request(ctx, h.nc, Service, "credentials_add", CredentialAddRequest{Name: "x", Type: "telnet", Site: "lab", Secret: "s"}, nil)
	if se, ok := err.(*bus.ServiceError); !ok || se.Code != 400 {
		t.Fatalf("bad type: %v", err)
	}
	h.request(ctx, "credentials_rm", NameRequest{Name: "linux-root"}, nil)
	if _, err := kv.Get(ctx, "linux-root"); err == nil {
		t.Fatal("credential not removed")
	}
}

// TestSchedulesFireOnce: two replicas, one due one-off schedule, one run.
func TestSchedulesFireOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.235.0/24", 0)
	stop1 := h.startService(ctx)
	defer stop1()
	stop2 := h.startService(ctx)
	defer stop2()
	at := time.Now().Add(time.Second).UTC()
	h.request(ctx, "schedules_add", Schedule{Name: "nightly", Site: "lab", Ranges: []string{"127.77.235.0/30"}, At: &at}, nil)
	err := bus.Request(ctx, h.nc, Service, "schedules_add", Schedule{Name: "bad", Site: "lab", Cron: "every tuesday"}, nil)
	if se, ok := err.(*bus.ServiceError); !ok || se.Code != 400 {
		t.Fatalf("bad cron: %v", err)
	}
	eventually(t, 60*time.Second, func() error {
		var out struct {
			Schedules []Schedule `json:"schedules"`
		}
		h.request(ctx, "schedules_ls", struct{}{}, &out)
		if len(out.Schedules) != 1 || out.Schedules[0].LastRun == "" {
			return fmt.Errorf("schedules %+v", out.Schedules)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	var out struct {
		Runs []RunView `json:"runs"`
	}
	h.request(ctx, "runs_ls", struct{}{}, &out)
	n := 0
	for _, r := range out.Runs {
		if r.Schedule == "nightly" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("schedule fired %d times", n)
	}
}

func TestPartitionStable(t *testing.T) {
	p := func(serial, mac, name string) envelope.CIPayload {
		return envelope.CIPayload{Items: []envelope.CIItem{
			{Ref: "host", Class: "linux_server", Attributes: map[string]any{"serial_number": serial, "name": name}},
			{Ref: "nic0", Class: "network_adapter", Parent: "host", Attributes: map[string]any{"mac_address": mac}},
		}}
	}
	a, b := p("ABC123", "00:50:56:aa:bb:01", "x"), p("ABC123", "00:50:56:aa:bb:02", "y")
	if bus.CMDBPartitionKey(a) != bus.CMDBPartitionKey(b) || bus.CMDBPartition(a, 8) != bus.CMDBPartition(b, 8) {
		t.Fatal("same serial, different partitions")
	}
	j1, j2 := p("To Be Filled By O.E.M.", "00:50:56:aa:bb:01", "x"), p("To Be Filled By O.E.M.", "00:50:56:aa:bb:02", "x")
	if bus.CMDBPartitionKey(j1) == bus.CMDBPartitionKey(j2) {
		t.Fatalf("junk serial used as identity: %s", bus.CMDBPartitionKey(j1))
	}
	for _, x := range []envelope.CIPayload{a, j1, j2} {
		if n := bus.CMDBPartition(x, 8); n < 0 || n >= 8 {
			t.Fatalf("partition %d", n)
		}
	}
	if subj := bus.CMDBIngestSubjectFor(a, 8); subj != bus.CMDBIngestSubject(bus.CMDBPartition(a, 8)) {
		t.Fatalf("subject %s", subj)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil || strings.Count(err.Error(), "\n") < 4 {
		t.Fatalf("want every problem at once, got %v", err)
	}
	c := DefaultConfig()
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.SweepInFlight = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "sweep in flight -1") {
		t.Fatalf("a negative sweep window: %v", err)
	}
}

// TestOneActiveReplica: with ShareRuns off (the default), of two replicas one serves (the
// lease holder); with it on both serve, and the run belongs to the replica holding its
// lease. Either way, when the replica advancing a run stops in the middle of it the other
// takes over, resumes the run and completes it.
func TestOneActiveReplica(t *testing.T) {
	for _, c := range []struct {
		name   string
		shared bool
		lab    string
	}{
		{name: "active/standby", lab: "127.77.118.0/24"},
		{name: "shared runs", shared: true, lab: "127.77.103.0/24"},
	} {
		t.Run(c.name, func(t *testing.T) { oneActiveReplica(t, c.lab, c.shared) })
	}
}

func oneActiveReplica(t *testing.T, labRange string, shared bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, labRange, 20)
	holder := func(key string) string {
		kv, err := h.js.KeyValue(ctx, bus.KVLeases)
		if err != nil {
			return ""
		}
		e, err := kv.Get(ctx, key)
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	start := h.startSharedReplica
	if !shared {
		start = h.startStandbyReplica
	}
	// a 10 s lease: a replica starved of CPU on a loaded machine must not lose it mid-test
	stopA := start(ctx, "replica-a", 10*time.Second)
	eventually(t, 30*time.Second, func() error {
		if holder(ActiveLeaseKey) != "replica-a" {
			return fmt.Errorf("lease held by %q", holder(ActiveLeaseKey))
		}
		return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil)
	})
	// the run starts with replica a alone: its run
	h.addLabCredentials(ctx, "")
	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	stopB := start(ctx, "replica-b", 10*time.Second)
	defer stopB()
	// active/standby: replica b stands by, the service has exactly one instance answering;
	// shared runs: both answer
	want := 1
	if shared {
		want = 2
	}
	eventually(t, 30*time.Second, func() error {
		var infos []json.RawMessage
		sub, err := h.nc.SubscribeSync(nats.NewInbox())
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
		_ = h.nc.PublishRequest("$SRV.PING."+Service, sub.Subject, nil)
		for {
			m, err := sub.NextMsg(2 * time.Second)
			if err != nil {
				break
			}
			infos = append(infos, m.Data)
		}
		if len(infos) != want || holder(ActiveLeaseKey) != "replica-a" {
			return fmt.Errorf("%d discovery instances answer, lease held by %q; want %d, replica-a", len(infos), holder(ActiveLeaseKey), want)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		var v RunView
		h.request(ctx, "run_get", IDRequest{ID: st.Run}, &v)
		if v.Counters.Alive == 0 {
			return fmt.Errorf("run %s: nothing alive yet (%s)", st.Run, v.State)
		}
		if shared && holder(RunLeaseKey(st.Run)) != "replica-a" {
			return fmt.Errorf("run %s: lease held by %q, want replica-a", st.Run, holder(RunLeaseKey(st.Run)))
		}
		return nil
	})
	stopA()
	eventually(t, 40*time.Second, func() error {
		if holder(ActiveLeaseKey) != "replica-b" {
			return fmt.Errorf("lease held by %q", holder(ActiveLeaseKey))
		}
		return nil
	})
	v := h.waitRun(ctx, st.Run, 90*time.Second)
	alive := 0
	for _, mh := range h.lab.Manifest().Hosts {
		if mh.Class != "" {
			alive++
		}
	}
	if v.State != StateCompleted || v.Counters.Classified != alive {
		t.Fatalf("run after the takeover: %s %s, classified %d of %d; errors %v", v.State, v.Reason, v.Counters.Classified, alive, v.Errors)
	}
	if shared && !strings.Contains(h.replicaLog.String(), "replica=replica-b component=discovery run="+st.Run) {
		t.Errorf("replica b's log says nothing of run %s: was it taken over?", st.Run)
	}
}
