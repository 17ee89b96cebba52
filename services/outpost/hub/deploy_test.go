package hub

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/pki"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
)

// deployments/nats is not just parsed (libs/bus tests that): a NATS server started from
// hub.conf — TLS, accounts HUB/BRIDGES/SYS, auth callout, no JetStream domain — takes the agents
// service as its callout and a real bridge dialling tls:// with the CA, which enrolls and
// answers a probe. What the files say is what the code needs.
func TestBridgeAgainstDeploymentConfig(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../../deployments/nats", dir)
	files, err := pki.Ensure(pki.DefaultConfig(filepath.Join(dir, "certs"), []string{"localhost", "127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	issuer, _ := nkeys.CreateAccount()
	issuerPub, _ := issuer.PublicKey()
	t.Setenv("HUB_PASSWORD", "hub-deploy-test")
	t.Setenv("SYS_PASSWORD", "sys-deploy-test")
	t.Setenv("CALLOUT_ISSUER", issuerPub)
	t.Chdir(dir) // nats-server resolves cert and store paths against the working directory

	opts, err := server.ProcessConfigFile("hub.conf")
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.HTTPHost, opts.HTTPPort = "", 0
	opts.Websocket.Host, opts.Websocket.Port = "127.0.0.1", -1
	opts.StoreDir = filepath.Join(dir, "store")
	opts.NoLog, opts.NoSigs = true, true
	// The embedded hub sets this too: NKey clients get a nonce to sign under auth callout.
	if !opts.AlwaysEnableNonce {
		opts.AlwaysEnableNonce = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from hub.conf not ready")
	}
	t.Cleanup(ns.Shutdown)
	if opts.JetStreamDomain != "" {
		t.Errorf("hub.conf sets JetStream domain %q; the embedded hub has none (libs/bus/accounts.go says why)", opts.JetStreamDomain)
	}
	url := "tls://" + ns.Addr().String()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := bus.Connect(bus.ConnectConfig{URL: url, Name: "hub services", CAFile: files.CA,
		Options: []nats.Option{nats.UserInfo("hub", "hub-deploy-test")}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(ctx, js, Topology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	actx, astop := context.WithCancel(ctx)
	defer astop()
	ready := make(chan struct{})
	go func() {
		_ = agents.Run(actx, agents.Config{Version: "0.0.0-test"}, agents.Deps{NC: nc, JS: js, Issuer: issuer, Ready: func() { close(ready) }})
	}()
	<-ready
	var site agents.SiteAddReply
	if err := bus.Request(ctx, nc, "agents", "site_add", agents.SiteAddRequest{Name: "dc1", Ranges: []string{"127.0.0.0/8"}, AutoApprove: true}, &site); err != nil {
		t.Fatal(err)
	}
	bc := bridge.DefaultConfig()
	bc.Hub, bc.CAFile, bc.Site, bc.Name, bc.Token, bc.DataDir = url, files.CA, "dc1", "br-1", site.Token, filepath.Join(dir, "bridge")
	bc.Version = "0.0.0-test"
	bctx, bstop := context.WithCancel(ctx)
	bdone := make(chan error, 1)
	go func() { bdone <- bridge.Run(bctx, bc, bridge.Deps{Kinds: kinds.All()}) }()
	defer func() { bstop(); <-bdone }()

	var reply agents.ProbeReply
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = bus.Request(ctx, nc, "agents", "probe", agents.ProbeRequest{Site: "dc1", Kind: "echo",
			Params: json.RawMessage(`{"msg":"through the deployment config"}`), Priority: "interactive", Timeout: "3s"}, &reply)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("echo through a bridge on the deployment config: %v", err)
	}
	if len(reply.Results) == 0 || !strings.Contains(string(reply.Results[len(reply.Results)-1].Data), "through the deployment config") {
		t.Fatalf("echo answered %+v", reply)
	}
	if a, err := ns.LookupAccount(bus.AccountBridges); err != nil || a.NumConnections() != 1 {
		t.Errorf("the bridge is not (alone) in account %s: %v", bus.AccountBridges, err)
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
