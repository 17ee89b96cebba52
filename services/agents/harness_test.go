package agents_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/agents"
)

// clock is the hub's injected clock: tests move it, never sleep.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// logBuffer collects the service's log lines (text handler, debug and up).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines that contain every one of want.
func (b *logBuffer) lines(want ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, l := range strings.Split(b.buf.String(), "\n") {
		ok := l != ""
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// testHub is an embedded NATS JetStream server with the agents service as its auth callout,
// like `outpost up`, listening on a random loopback port for bridges.
type testHub struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	url   string
	clock *clock
	logs  *logBuffer
}

func newHub(t *testing.T) *testHub {
	t.Helper()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	issuerPub, _ := issuer.PublicKey()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "agents-test", StoreDir: t.TempDir(), Listen: "127.0.0.1:-1",
		Configure: func(o *server.Options) error {
			// The hub's own accounts: hub services in HUB, bridges placed in BRIDGES.
			o.AlwaysEnableNonce = true
			return bus.ApplyAccounts(o, bus.AccountVars{HubPassword: "hub-test-password", SysPassword: "sys-test-password", CalloutIssuer: issuerPub})
		}})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("hub", nats.UserInfo("hub", "hub-test-password"))
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	h := &testHub{nc: nc, js: js, url: srv.ClientURL(), logs: &logBuffer{},
		clock: &clock{now: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)}}
	ready := make(chan struct{})
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		done <- agents.Run(ctx, agents.Config{Version: "0.0.0-test"}, agents.Deps{NC: nc, JS: js, Issuer: issuer,
			Logger: log, Now: h.clock.Now, Ready: func() { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		nc.Close()
		srv.Shutdown()
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("agents service: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agents service not ready in 10 s")
	}
	return h
}

// call is a svc.agents.<op> request.
func (h *testHub) call(t *testing.T, op string, req, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return bus.Request(ctx, h.nc, "agents", op, req, out)
}

func (h *testHub) mustCall(t *testing.T, op string, req, out any) {
	t.Helper()
	if err := h.call(t, op, req, out); err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

// site creates a site and returns its first enrollment token.
func (h *testHub) site(t *testing.T, name string, auto bool) string {
	t.Helper()
	var out agents.SiteAddReply
	h.mustCall(t, "site_add", agents.SiteAddRequest{Name: name, Ranges: []string{"127.0.0.0/8"}, AutoApprove: auto}, &out)
	return out.Token
}

// bridge is a bridge's identity.
type bridge struct {
	kp  nkeys.KeyPair
	pub string
}

func newBridge(t *testing.T) bridge {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return bridge{kp: kp, pub: pub}
}

// enroll sends the bridge's signed enrollment as site/name with token.
func (h *testHub) enroll(t *testing.T, b bridge, site, name, token string) (envelope.EnrollmentReply, error) {
	t.Helper()
	xk, _ := nkeys.CreateCurveKeys()
	xpub, _ := xk.PublicKey()
	e := envelope.Enrollment{Name: name, Site: site, Token: token, NKey: b.pub, XKey: xpub, Version: "test",
		Capabilities: []string{"echo"}, Time: h.clock.Now().UTC()}
	sig, err := b.kp.Sign(e.SigningBytes())
	if err != nil {
		t.Fatal(err)
	}
	e.Sig = base64.RawURLEncoding.EncodeToString(sig)
	var reply envelope.EnrollmentReply
	err = h.call(t, "enroll", e, &reply)
	return reply, err
}

// connect dials the hub as the bridge would (its NKey, and the token when given) and says
// whether the auth callout let it in.
func (h *testHub) connect(t *testing.T, b bridge, token string) error {
	t.Helper()
	opts := []nats.Option{nats.Nkey(b.pub, b.kp.Sign), nats.MaxReconnects(0), nats.Timeout(5 * time.Second),
		nats.CustomInboxPrefix(bus.InboxPrefix(b.pub))}
	if token != "" {
		opts = append(opts, nats.Token(token))
	}
	nc, err := nats.Connect(h.url, opts...)
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

// code is the service error code of err, 0 for none or another error.
func code(err error) int {
	var se *bus.ServiceError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}
