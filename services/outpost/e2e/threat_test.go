package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	dlqapi "github.com/outpost-dev/outpost/libs/api/dlq"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/services/agents"
)

// The threat table: what an attacker holding a site token, a pending key, a revoked key or an
// approved bridge's key can do to the hub through NATS — publish, subscribe, request, and
// request with the reply steered onto hub subjects. Every row must be denied or inert, and
// the hub's data must be unchanged afterwards.
//
// The reply rows are the attack of the security review (2026-12): NATS does not check a
// request's reply subject against publish permissions, and a responder answers in its own
// account. With bridges in their own account, an answer can only land in BRIDGES.
func TestThreatTable(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tokA := h.addSite(t, "site-a", "127.0.0.0/8", true)
	h.addSite(t, "site-b", "127.0.0.0/8", true)
	tokP := h.addSite(t, "site-p", "127.0.0.0/8", false)
	approved := startBridge(t, h, "site-a", "bra", tokA)
	h.waitStatus(t, "bra", "up")
	approved.proc.kill(t) // the raw client below is the only user of bra's key
	revoked := startBridge(t, h, "site-a", "brr", tokA)
	h.waitStatus(t, "brr", "up")
	revoked.proc.kill(t)
	h.mustAPI(t, "POST", "/api/v1/agents/brr/revoke", nil, nil)
	h.waitStatus(t, "brr", "revoked")
	pending := startBridge(t, h, "site-p", "brp", tokP)
	h.waitStatus(t, "brp", "pending")
	pending.proc.kill(t)

	_, hjs := h.serviceConn(t)
	// A signed bridge build in the hub's object store: bridges may read builds, through
	// svc.agents.build_chunk only, and never write them.
	relKey, err := release.LoadOrCreateKey(filepath.Join(h.dir, release.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := agents.StoreBuild(context.Background(), hjs, relKey, release.Build{OS: "linux", Arch: "amd64", Version: "v9.9.9"}, []byte("a build")); err != nil {
		t.Fatal(err)
	}
	// bra's own probe consumer, and names it must not reach: another site's with the same
	// cells, its site's consumer of another profile (the group an echo-only orchestration
	// bridge would have), and a per-lane name of the layout before groups.
	ownCons := probeConsumer(t, hjs, "site-a", "interactive", "echo", bus.LaneAdhoc)
	otherSite := bus.ProbeConsumer("site-b", "interactive", groupKeyOf(ownCons))
	otherProfile := bus.ProbeConsumer("site-a", "interactive", bus.ProbeGroups(map[string]bus.ProbeProfile{
		"x": {Capabilities: []string{"echo"}, Apps: []string{bus.AppOrchestration}}})[0].Key)
	perLane := bus.ProbeConsumerPrefix("site-a") + "interactive_echo_adhoc"
	before := snapshotHub(t, h, hjs)

	// Secrets an attacker would like to plant as gateway tokens: one per identity.
	plant := map[string]string{}
	identities := []struct {
		name    string
		connect func(errs chan<- error) (*nats.Conn, error)
		refused bool // the connection itself is refused
	}{
		{"approved bridge key", func(errs chan<- error) (*nats.Conn, error) { return identityConn(t, h, approved.dir, errs) }, false},
		{"pending key", func(errs chan<- error) (*nats.Conn, error) { return identityConn(t, h, pending.dir, errs) }, false},
		{"fresh key with a site token", func(errs chan<- error) (*nats.Conn, error) { return freshKeyConn(h, tokA, errs) }, false},
		{"revoked key", func(errs chan<- error) (*nats.Conn, error) { return identityConn(t, h, revoked.dir, errs) }, true},
	}
	// Hub subjects nobody outside the hub may touch.
	hubSubjects := []string{
		"$KV.tokens.x", "$KV.agents.x", "$KV.sites.x",
		"$JS.API.STREAM.INFO.RESULTS", "$JS.API.STREAM.PURGE.RESULTS", "$JS.API.STREAM.MSG.GET.KV_credentials", "$JS.API.INFO",
		"$JS.API.CONSUMER.MSG.NEXT.PROBES." + otherSite, bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT.PROBES." + otherSite,
		// probe consumers: only its own groups' are a bridge's; it never creates, deletes or
		// lists one, so it cannot make itself a consumer with other filters
		bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT.PROBES." + otherProfile, bus.BridgeJSAPIPrefix + ".CONSUMER.INFO.PROBES." + otherProfile,
		bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT.PROBES." + perLane, bus.BridgeJSAPIPrefix + ".CONSUMER.INFO.PROBES." + otherSite,
		"$JS.ACK.PROBES." + otherSite + ".1.1.1.1.1.0", "$JS.ACK.PROBES." + otherProfile + ".1.1.1.1.1.0",
		"$JS.API.CONSUMER.CREATE.PROBES." + ownCons + ".probe.site-b.>", bus.BridgeJSAPIPrefix + ".CONSUMER.CREATE.PROBES." + ownCons + ".probe.site-b.>",
		"$JS.API.CONSUMER.CREATE.PROBES.evil", bus.BridgeJSAPIPrefix + ".CONSUMER.CREATE.PROBES.evil",
		"$JS.API.CONSUMER.DURABLE.CREATE.PROBES." + ownCons, bus.BridgeJSAPIPrefix + ".CONSUMER.DURABLE.CREATE.PROBES." + ownCons,
		"$JS.API.CONSUMER.DELETE.PROBES." + ownCons, bus.BridgeJSAPIPrefix + ".CONSUMER.DELETE.PROBES." + ownCons,
		bus.BridgeJSAPIPrefix + ".CONSUMER.LIST.PROBES", bus.BridgeJSAPIPrefix + ".CONSUMER.NAMES.PROBES",
		"cmdb.ingest.0", "cmdb.changed.linux_server", "event.hub.audit", "dlq.cmdb", "dlq.bridge.site-b",
		"svc.agents.approve", "svc.agents.site_add", "svc.discovery.credentials_seal", "svc.cmdb.ingest",
		"svc.dlq.retry", "svc.dlq.purge", "svc.dlq.show",
		bus.ResultSubject("discovery", "site-b", "echo", "brb"), bus.ResultSubject("discovery", "site-a", "echo", "someone-else"),
		"probe.site-a.interactive.echo", "agent.heartbeat.site-b.brb", bus.ControlSubject("site-b", "brb"),
		// the build store: no object store API of any kind
		"$O.bridge_builds.C.x", "$O.bridge_builds.M.eA", "$JS.API.STREAM.INFO.OBJ_bridge_builds", "$JS.API.CONSUMER.CREATE.OBJ_bridge_builds",
		"$JS.API.DIRECT.GET.OBJ_bridge_builds.$O.bridge_builds.M.eA", bus.BridgeJSAPIPrefix + ".DIRECT.GET.OBJ_import_uploads",
		bus.BridgeJSAPIPrefix + ".STREAM.INFO.OBJ_bridge_builds",
	}
	for _, id := range identities {
		t.Run(id.name, func(t *testing.T) {
			errs := make(chan error, 1024)
			nc, err := id.connect(errs)
			if id.refused {
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				return
			}
			if err != nil {
				t.Fatalf("cannot connect at all: %v", err)
			}
			defer nc.Close()
			secret := randomHex(t)
			plant[id.name] = secret
			sum := sha256.Sum256([]byte(secret))
			tokenKey := "$KV.tokens." + hex.EncodeToString(sum[:])

			// Publish and request onto hub subjects: denied, and nothing answers.
			for _, s := range hubSubjects {
				_ = nc.Publish(s, []byte(`{"role":"admin"}`))
				if m, err := nc.Request(s, []byte(`{}`), 200*time.Millisecond); err == nil {
					t.Errorf("request to %s answered: %s", s, m.Data)
				}
			}
			// Subscribe to hub subjects: denied (the violation arrives asynchronously).
			for _, s := range []string{">", "$KV.>", "$JS.>", "cmdb.>", "svc.>", "probe.>", "result.>", "event.>", "dlq.>", "_INBOX.>"} {
				if sub, err := nc.SubscribeSync(s); err == nil {
					if m, err := sub.NextMsg(100 * time.Millisecond); err == nil {
						t.Errorf("subscription to %s received %s", s, m.Subject)
					}
				}
			}
			// Requests on what the identity may use, with the answer steered onto hub data.
			allowed := []string{"svc.agents.enroll",
				bus.BridgeJSAPIPrefix + ".CONSUMER.INFO.PROBES." + ownCons,
				bus.ResultSubject("discovery", "site-a", "echo", "bra"), "event.site-a.test", bus.BridgeDLQSubject("site-a"), "svc.agents.build_chunk"}
			steer := []string{tokenKey, "cmdb.ingest.0", "event.hub.audit", "dlq.cmdb", "$KV.agents.site-a.evil",
				"$JS.API.STREAM.PURGE.RESULTS", "$JS.API.STREAM.DELETE.KV_tokens", "svc.agents.approve", "svc.agents.site_add",
				"svc.dlq.retry", "svc.dlq.purge"}
			for _, s := range allowed {
				for _, reply := range steer {
					_ = nc.PublishRequest(s, reply, []byte(`{"id":"x","role":"admin","name":"planted"}`))
				}
			}
			// Builds: an approved bridge reads a build, and nothing but a build (the name is the
			// build's os, arch and version in a closed alphabet, never an object name); anyone
			// else reads nothing.
			bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
			got, err := agentsapi.BuildChunk.Call(bctx, nc, agentsapi.BuildChunkRequest{OS: "linux", Arch: "amd64", Version: "v9.9.9"})
			bcancel()
			isApproved := id.name == "approved bridge key"
			if isApproved != (err == nil && string(got.Data) == "a build") {
				t.Errorf("build_chunk of a stored build: %v %q", err, got.Data)
			}
			for _, bad := range []agentsapi.BuildChunkRequest{{OS: "linux", Arch: "amd64", Version: "../../import_uploads/x"},
				{OS: "linux", Arch: "amd64", Version: ">"}, {OS: "linux.x", Arch: "amd64", Version: "v9.9.9"}, {OS: "..", Arch: "..", Version: "x"}} {
				if !isApproved {
					break // it cannot even ask (above)
				}
				bctx, bcancel := context.WithTimeout(context.Background(), 2*time.Second)
				got, err := agentsapi.BuildChunk.Call(bctx, nc, bad)
				bcancel()
				var se *bus.ServiceError
				if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
					t.Errorf("build_chunk %+v: %v (%d bytes), want a 400", bad, err, len(got.Data))
				}
			}
			// Dead letters of its own, naming hub subjects, for an admin to retry one day.
			for _, target := range []string{"cmdb.ingest.0", "probe.site-a.interactive.echo", "event.hub.audit"} {
				m := nats.NewMsg(bus.BridgeDLQSubject("site-a"))
				m.Header.Set(bus.HeaderDLQSubject, target)
				m.Header.Set(bus.HeaderDLQCode, bus.CodeDecode)
				m.Header.Set(bus.HeaderDLQService, "cmdb")
				m.Data = []byte(`{"source":"x","items":[{"ref":"a","class":"linux_server","attributes":{"serial_number":"EVIL"}}]}`)
				_ = nc.PublishMsg(m)
			}
			if err := nc.Flush(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
				t.Logf("flush: %v", err)
			}
		})
	}
	// Answers are asynchronous: give a steered one every chance to land before checking.
	time.Sleep(time.Second)
	after := snapshotHub(t, h, hjs)
	for k, v := range after {
		if before[k] != v {
			t.Errorf("hub data changed: %s was %d, now %d", k, before[k], v)
		}
	}
	// An admin retrying every dead letter a bridge wrote (planted above, naming hub subjects)
	// re-publishes none of them: a retried message never gains the hub's rights.
	var rr dlqapi.RetryReply
	h.mustAPI(t, "POST", "/api/v1/dlq/retry", map[string]any{"all": true, "service": "bridge"}, &rr)
	if len(rr.Retried) != 0 || len(rr.NotRetried) == 0 {
		t.Errorf("retrying bridges' own dead letters: %d retried, %d refused", len(rr.Retried), len(rr.NotRetried))
	}
	final := snapshotHub(t, h, hjs)
	for _, k := range []string{"stream " + bus.StreamCMDB, "stream " + bus.StreamChanges, "stream " + bus.StreamProbes} {
		if final[k] != before[k] {
			t.Errorf("a retried dead letter reached the hub: %s was %d, now %d", k, before[k], final[k])
		}
	}
	for who, secret := range plant {
		req, _ := http.NewRequest("GET", "http://"+h.http+"/api/v1/tokens", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a token planted by the %s authenticates: %d", who, resp.StatusCode)
		}
	}
}

// snapshotHub counts what an attack could change: KV keys and stream messages of hub data.
func snapshotHub(t *testing.T, h *testHub, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string]int{}
	for _, b := range []string{bus.KVTokens, bus.KVAgents, bus.KVSites} {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := kv.Keys(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			t.Fatal(err)
		}
		// Heartbeat timestamps change on their own; the set of keys must not.
		out["kv "+b] = len(keys)
	}
	for _, s := range []string{bus.StreamCMDB, bus.StreamChanges, bus.StreamProbes, "OBJ_" + release.Bucket} {
		st, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out["stream "+s] = int(info.State.Msgs)
		// No consumer made, deleted or swapped for one with other filters.
		out["consumers of "+s] = info.State.Consumers
	}
	// Dead letters: the attacking site may fill its own quota (dlq.<service>.site-a: its own
	// bad results and dead letters), nothing else.
	dlq, err := js.Stream(ctx, bus.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	dinfo, err := dlq.Info(ctx, jetstream.WithSubjectFilter("dlq.>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, n := range dinfo.State.Subjects {
		if !strings.HasSuffix(subj, ".site-a") {
			out["dlq "+subj] = int(n)
		}
	}
	// Audit entries other than the test's own API calls.
	st, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter("event.hub.>"))
	if err != nil {
		t.Fatal(err)
	}
	out["events event.hub.>"] = len(info.State.Subjects)
	if n, ok := info.State.Subjects["event.hub.audit"]; ok {
		out["audit entries"] = int(n)
	}
	_ = h
	return out
}

// freshKeyConn connects with a new NKey and a site's enrollment token, as an attacker who
// found the token would.
func freshKeyConn(h *testHub, token string, errs chan<- error) (*nats.Conn, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	return nats.Connect("nats://"+h.nats, nats.Nkey(pub, kp.Sign), nats.Token(token), nats.CustomInboxPrefix(bus.InboxPrefix(pub)),
		nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
}

func randomHex(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// A threat-table row of its own (it needs a bridge of a narrow profile): an approved bridge
// re-enrolling with a wider profile (every application instead of orchestration only) is
// recorded as requesting it and granted nothing more — the consumers of the wider profile,
// and with them discovery probes and the site's credentials they carry, stay out of reach
// until an admin approves again.
func TestThreatTableWiderProfile(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "site-w", "127.0.0.0/8", true)
	br := startBridge(t, h, "site-w", "brw", tok, "--apps", bus.AppOrchestration)
	h.waitStatus(t, "brw", "up")
	br.proc.kill(t) // the raw client below is the only user of brw's key
	_, hjs := h.serviceConn(t)
	own := probeConsumer(t, hjs, "site-w", "interactive", "echo", bus.AppOrchestration)

	var ls agentsapi.ListReply
	h.mustAPI(t, "GET", "/api/v1/agents", nil, &ls)
	var rec agentsapi.AgentView
	for _, a := range ls.Agents {
		if a.Name == "brw" {
			rec = a
		}
	}
	seed, err := os.ReadFile(filepath.Join(br.dir, "identity.nk"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 64)
	nc, err := identityConn(t, h, br.dir, errs)
	if err != nil {
		t.Fatalf("the approved key cannot connect: %v", err)
	}
	defer nc.Close()
	// Every application: the record's capabilities, no --apps.
	e := envelope.Enrollment{Name: "brw", Site: "site-w", NKey: rec.ID, XKey: rec.XKey, Version: rec.Version,
		Capabilities: rec.Capabilities, Time: time.Now().UTC()}
	sig, err := kp.Sign(e.SigningBytes())
	if err != nil {
		t.Fatal(err)
	}
	e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := agentsapi.Enroll.Call(ctx, nc, e)
	if err != nil {
		t.Fatalf("re-enrollment with a wider profile: %v", err)
	}
	if !strings.Contains(reply.Message, "outpost agents approve site-w/brw") {
		t.Errorf("the reply does not say the wider profile awaits approval: %+v", reply)
	}
	// Hub side: no consumer of the site takes a discovery probe.
	if _, err := bus.FindProbeConsumer(ctx, hjs, "site-w", "interactive", "echo", bus.AppDiscovery); !errors.Is(err, bus.ErrNoProbeConsumer) {
		t.Errorf("a consumer of the site takes discovery probes after the bridge asked for them: %v", err)
	}
	// Bridge side, reconnected into whatever its rights are now: its own consumer answers,
	// the wider profile's consumers do not.
	nc.Close()
	nc2, err := identityConn(t, h, br.dir, errs)
	if err != nil {
		t.Fatalf("the approved key cannot reconnect: %v", err)
	}
	defer nc2.Close()
	eventually(t, 60*time.Second, func() error {
		_, err := nc2.Request(bus.BridgeJSAPIPrefix+".CONSUMER.INFO."+bus.StreamProbes+"."+own, nil, 5*time.Second)
		return err
	})
	wide := bus.ProbeGroups(map[string]bus.ProbeProfile{"brw": {Capabilities: rec.Capabilities}})
	for _, g := range wide {
		for _, prio := range envelope.Priorities {
			cons := bus.ProbeConsumer("site-w", prio, g.Key)
			for _, s := range []string{bus.BridgeJSAPIPrefix + ".CONSUMER.INFO." + bus.StreamProbes + "." + cons,
				bus.BridgeJSAPIPrefix + ".CONSUMER.MSG.NEXT." + bus.StreamProbes + "." + cons} {
				if m, err := nc2.Request(s, []byte(`{"batch":1,"expires":1000000000}`), 2*time.Second); err == nil {
					t.Errorf("the wider profile's consumer answered on %s: %s", s, m.Data)
				}
			}
		}
	}
	// The request is visible to operators; approving grants it.
	h.mustAPI(t, "GET", "/api/v1/agents", nil, &ls)
	for _, a := range ls.Agents {
		if a.Name == "brw" && (a.Requested == nil || len(a.Requested.Apps) != 0) {
			t.Errorf("agents ls does not show the wider request: %+v", a.Requested)
		}
	}
	h.mustAPI(t, "POST", "/api/v1/agents/brw/approve", nil, nil)
	if _, err := bus.FindProbeConsumer(ctx, hjs, "site-w", "interactive", "echo", bus.AppDiscovery); err != nil {
		t.Errorf("approved, yet no consumer takes the site's discovery probes: %v", err)
	}
}
