package bus_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
)

// deployments/nats/accounts.conf is the text the embedded hub runs.
func TestDeployAccountsConfIsTheCodes(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deploySrc, "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != bus.AccountsConf {
		if os.Getenv("OUTPOST_UPDATE_DEPLOYMENTS") != "" {
			if err := os.WriteFile(filepath.Join(deploySrc, "accounts.conf"), []byte(bus.AccountsConf), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatal("deployments/nats/accounts.conf differs from bus.AccountsConf: run OUTPOST_UPDATE_DEPLOYMENTS=1 go test ./libs/bus -run TestDeployAccountsConfIsTheCodes")
	}
}

// accountsHub is an embedded server with the hub's accounts and a minimal auth callout that
// places every NKey user in BRIDGES with site a's rights (the agents service's real one is
// tested in services/agents and services/outpost/hub).
type accountsHub struct {
	srv *bus.Server
	nc  *nats.Conn
	js  jetstream.JetStream
}

const accSite, accAgent = "a", "a1"

func startAccountsHub(t testing.TB) *accountsHub {
	t.Helper()
	issuer, _ := nkeys.CreateAccount()
	ipub, _ := issuer.PublicKey()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "acc", StoreDir: t.TempDir(), Listen: "127.0.0.1:-1",
		Configure: func(o *server.Options) error {
			o.AlwaysEnableNonce = true
			return bus.ApplyAccounts(o, bus.AccountVars{HubPassword: "hub-pw", SysPassword: "sys-pw", CalloutIssuer: ipub})
		}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("hub", nats.UserInfo("hub", "hub-pw"))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.Subscribe("$SYS.REQ.USER.AUTH", func(m *nats.Msg) {
		req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
		if err != nil {
			return
		}
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Name = accSite + "." + accAgent
		uc.Audience = bus.AccountBridges
		p := &uc.Permissions
		cons := bus.ProbeConsumer(accSite, "standard", "echo-adhoc")
		p.Pub.Allow.Add("outpost.jsapi.CONSUMER.MSG.NEXT.PROBES."+cons, "outpost.jsapi.CONSUMER.INFO.PROBES."+cons, "$JS.ACK.PROBES."+cons+".>",
			"result.*."+accSite+".>", "event."+accSite+".>", "svc.agents.enroll")
		p.Sub.Allow.Add(bus.InboxPrefix(req.ConnectOptions.Nkey)+".>", bus.ControlSubject(accSite, accAgent))
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
		ujwt, err := uc.Encode(issuer)
		if err != nil {
			return
		}
		rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
		rc.Audience = req.Server.ID
		rc.Jwt = ujwt
		tok, _ := rc.Encode(issuer)
		_ = m.Respond([]byte(tok))
	})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: bus.ProbeConsumer(accSite, "standard", "echo-adhoc"),
		FilterSubject: bus.ProbeSubject(accSite, "standard", "echo", bus.LaneAdhoc), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe(); nc.Close(); srv.Shutdown() })
	return &accountsHub{srv: srv, nc: nc, js: js}
}

func (h *accountsHub) bridge(t testing.TB) (*nats.Conn, nkeys.KeyPair) {
	t.Helper()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(h.srv.ClientURL(), nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return kp.Sign(nonce) }),
		nats.CustomInboxPrefix(bus.InboxPrefix(pub)), nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) { t.Logf("async err: %v", err) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, kp
}

// A bridge in BRIDGES pulls its site's probes, acks them and publishes results with a
// publish ack, all through the imports; replies it steers land nowhere in HUB.
func TestBridgeAccountWorksThroughImports(t *testing.T) {
	h := startAccountsHub(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bnc, _ := h.bridge(t)
	bjs, err := jetstream.NewWithAPIPrefix(bnc, "outpost.jsapi")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(ctx, bus.ProbeSubject(accSite, "standard", "echo", bus.LaneAdhoc), []byte("probe-1")); err != nil {
		t.Fatal(err)
	}
	cons, err := bjs.Consumer(ctx, bus.StreamProbes, bus.ProbeConsumer(accSite, "standard", "echo-adhoc"))
	if err != nil {
		t.Fatalf("consumer info through the import: %v", err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		got++
		if string(m.Data()) != "probe-1" {
			t.Fatalf("pulled %q", m.Data())
		}
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack through the import: %v", err)
		}
	}
	if got != 1 {
		t.Fatalf("pulled %d probes (%v)", got, batch.Error())
	}
	if n := streamMsgs(t, h.js, bus.StreamProbes); n != 0 {
		t.Fatalf("the acked probe is still queued (%d)", n)
	}
	if _, err := bjs.Publish(ctx, "result.discovery.a.echo", []byte("result")); err != nil {
		t.Fatalf("result with publish ack through the import: %v", err)
	}
	resultsBefore := streamMsgs(t, h.js, bus.StreamResults)

	// Replies steered onto hub data: the answers go back into BRIDGES, where nothing keeps them.
	kv, err := h.js.KeyValue(ctx, bus.KVTokens)
	if err != nil {
		t.Fatal(err)
	}
	steer := []string{"$KV.tokens.planted", "cmdb.ingest.0", "event.hub.audit", "dlq.cmdb", "result.discovery.b.echo", "svc.agents.approve"}
	for _, reply := range steer {
		_ = bnc.PublishRequest("result.discovery.a.echo", reply, []byte("x"))
		_ = bnc.PublishRequest("svc.agents.enroll", reply, []byte("x"))
		_ = bnc.PublishRequest("$JS.API.CONSUMER.INFO.PROBES."+bus.ProbeConsumer(accSite, "standard", "echo-adhoc"), reply, nil)
	}
	if err := bnc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // answers are asynchronous; give them time to land if they could
	if _, err := kv.Get(ctx, "planted"); err == nil {
		t.Error("a steered reply planted a token")
	}
	for _, s := range []string{bus.StreamCMDB, bus.StreamDLQ, bus.StreamEvents} {
		if n := streamMsgs(t, h.js, s); n != 0 {
			t.Errorf("a steered reply landed in %s (%d messages)", s, n)
		}
	}
	// The three publishes on its own subject are stored; nothing on site b's.
	if n := streamMsgs(t, h.js, bus.StreamResults); n != resultsBefore+uint64(len(steer)) {
		t.Errorf("RESULTS has %d messages, want %d", n, resultsBefore+uint64(len(steer)))
	}
	st, _ := h.js.Stream(ctx, bus.StreamResults)
	if _, err := st.GetLastMsgForSubject(ctx, "result.discovery.b.echo"); err == nil {
		t.Error("a steered reply landed on site b's results")
	}
}

func TestOrigin(t *testing.T) {
	for subject, want := range map[string]string{
		"result.discovery.dc1.tcp_scan.br-1": "dc1", "event.dc2.syslog": "dc2", "event.hub.audit": "hub",
		"probe.dc3.standard.ssh": "dc3", "dlq.bridge.dc4": "dc4", "cmdb.ingest.3": "hub", "import.set.rows": "hub", "": "hub",
	} {
		if got := bus.Origin(subject); got != want {
			t.Errorf("Origin(%q) = %q, want %q", subject, got, want)
		}
	}
}

// A site flooding the DLQ evicts its own oldest dead letters, never another site's.
func TestDLQQuotaPerOrigin(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "quota", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	l := bus.DefaultLimits()
	l.DLQPerOrigin = 3
	if err := bus.Provision(ctx, js, bus.DefaultTopology(l)); err != nil {
		t.Fatal(err)
	}
	dl := bus.NewDeadLetterer(js, "discovery", slogDiscard(), nil)
	send := func(site string, i int) {
		subj := bus.ResultSubject("discovery", site, "echo", "br")
		ack, err := js.Publish(ctx, subj, []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		src := bus.SourceRef{Stream: bus.StreamResults, Subject: subj, Seq: ack.Sequence}
		if err := dl.DeadLetter(ctx, src, nats.Header{}, []byte(fmt.Sprint(i)), bus.CodeDecode, "bad"); err != nil {
			t.Fatal(err)
		}
	}
	send("b", 0)
	for i := range 10 {
		send("a", i)
	}
	st, _ := js.Stream(ctx, bus.StreamDLQ)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("dlq.>"))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects; got["dlq.discovery.a"] != 3 || got["dlq.discovery.b"] != 1 {
		t.Fatalf("dead letters per subject: %v, want a: 3 (its newest), b: 1", got)
	}
	m, err := st.GetLastMsgForSubject(ctx, "dlq.discovery.a")
	if err != nil || string(m.Data) != "9" {
		t.Fatalf("site a's newest dead letter: %v %v", m, err)
	}
}
