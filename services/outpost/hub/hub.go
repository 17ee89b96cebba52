// Package hub is the composition root of `outpost up`: one process with the embedded NATS
// JetStream server, the provisioned bus, and every hub service that exists, each started
// through its own Run(ctx, Config, Deps).
package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/bus/capacity"
	"github.com/outpost-dev/outpost/libs/bus/deadletters"
	"github.com/outpost-dev/outpost/libs/keyfile"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/cmdb"
	"github.com/outpost-dev/outpost/services/correlation"
	"github.com/outpost-dev/outpost/services/discovery"
	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
	"github.com/outpost-dev/outpost/services/importer"
	"github.com/outpost-dev/outpost/services/mapping"
	"github.com/outpost-dev/outpost/services/orchestration"
)

// Config of the all-in-one hub.
type Config struct {
	DataDir       string // everything durable lives here
	HTTPAddr      string // gateway
	NATSAddr      string // client port for bridges
	NoLocalBridge bool
	// Lab runs the simulated network with site "lab" and starts its discovery (the demo).
	Lab      bool
	LabRange string
	LabHosts int
	LabSeed  int64
	// CMDB is the store DSN: sqlite://PATH (default <data>/cmdb.db) or postgres://...
	CMDB   string
	Limits bus.Limits
	// DiscoveryRetention keeps finished discovery runs (record and hosts) this long after
	// they ended (default 30 days); `--discovery-retention`.
	DiscoveryRetention time.Duration
	// DiscoveryStandby makes discovery replicas active/standby (one serves, the others wait
	// for its lease) instead of sharing runs, each run owned by one of them through its own
	// lease (the default: discovery.Config.ShareRuns); `--discovery-standby`.
	DiscoveryStandby bool
	// WSSAddr, when set, accepts bridges over WebSocket (wss://, TLS always) for sites whose
	// only way out is HTTPS.
	WSSAddr string
	// TLSCert/TLSKey serve TLS with the operator's certificate; without them a hub bound off
	// loopback makes its own CA and certificate in <data>/tls/. TLSClientCA requires bridges
	// to present a certificate it signed (mTLS) on the NATS and WebSocket ports. TLSSANs are
	// extra names the made certificate carries (a DNS name or address bridges dial).
	TLSCert, TLSKey, TLSClientCA string
	TLSSANs                      []string
	// MappingPatterns is a directory of Service Mapping pattern files (*.yaml) that add to
	// or replace the built-in ones.
	MappingPatterns string
	// Now is the clock of certificate validity (tests); nil is time.Now.
	Now func() time.Time
	// Out receives what a person starting the hub must see once (the admin token).
	Out io.Writer
	// CorrelationRules is the correlation service's rule directory (*.yaml: event rules,
	// grouping, correlate, inhibit, flapping, topology, remediate); empty: the defaults.
	// Notifiers receive its group notifications (--notify NAME=URL).
	CorrelationRules string
	Notifiers        []correlation.NotifierConfig
}

// DefaultConfig is `outpost up` without flags.
func DefaultConfig() Config {
	return Config{DataDir: "./data", HTTPAddr: "127.0.0.1:8080", NATSAddr: "127.0.0.1:4222", Limits: bus.DefaultLimits(), Out: os.Stdout,
		LabRange: "127.77.0.0/24", LabHosts: 60, LabSeed: 7, DiscoveryRetention: discovery.DefaultRetention}
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data is empty: the hub needs a directory for its data"))
	}
	for _, a := range []struct{ flag, v string }{{"--http", c.HTTPAddr}, {"--nats", c.NATSAddr}, {"--wss", c.WSSAddr}} {
		if a.flag == "--wss" && a.v == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port (%v)", a.flag, a.v, err))
		}
	}
	if c.DiscoveryRetention != 0 && c.DiscoveryRetention < time.Hour {
		errs = append(errs, fmt.Errorf("--discovery-retention %s: at least 1h (e.g. 720h keeps finished runs 30 days)", c.DiscoveryRetention))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together: give both, or neither to let the hub make its own in <data>/tls/"))
	}
	for _, f := range []struct{ flag, path string }{{"--tls-cert", c.TLSCert}, {"--tls-key", c.TLSKey}, {"--tls-client-ca", c.TLSClientCA}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
		}
	}
	if c.TLSClientCA != "" && !c.tlsWanted() {
		errs = append(errs, errors.New("--tls-client-ca needs TLS: bind --nats off loopback, add --wss, or give --tls-cert/--tls-key"))
	}
	for _, san := range c.TLSSANs {
		if san == "" || strings.ContainsAny(san, " /@") {
			errs = append(errs, fmt.Errorf("--tls-san %q: want a DNS name or an IP address", san))
		}
	}
	if c.CorrelationRules != "" {
		// Rule files are checked before anything starts: a bad rule is a usage error with
		// its file:line, not a service failing later.
		if st, err := os.Stat(c.CorrelationRules); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("--correlation-rules %q: want a directory of *.yaml rule files", c.CorrelationRules))
		} else if _, err := correlation.LoadRules(c.CorrelationRules); err != nil {
			errs = append(errs, fmt.Errorf("--correlation-rules: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Deps is what every in-process service receives.
type Deps struct {
	NC        *nats.Conn
	JS        jetstream.JetStream
	Topology  bus.Topology
	Telemetry telemetry.Providers
	Logger    *slog.Logger
	DataDir   string
	// Server is the embedded NATS server; Issuer signs auth callout answers; HubAuth signs a
	// hub service's own connections in.
	Server  *bus.Server
	Issuer  nkeys.KeyPair
	HubAuth nats.Option
	// CurveKey seals credentials to bridges (libs/seal).
	CurveKey nkeys.KeyPair
	// Config is the hub's configuration, for the settings of one service.
	Config Config
	// ReleaseKey signs bridge builds (libs/release; `outpost bridge-builds add`).
	ReleaseKey *release.Key
	// Metrics is the process's Prometheus registry (outpost serve's operations port); the
	// gateway serves it on /metrics too. nil: the gateway makes its own.
	Metrics *prometheus.Registry

	ready *readiness
}

const hubUser = "hub"

// Service is one hub service in the registry.
type Service struct {
	Name string
	Run  func(ctx context.Context, deps Deps) error
	// UpOnly services run only in the all-in-one `outpost up` (its local bridge, the lab
	// demo). The others run there too, and `outpost serve NAME…` runs them as replicas in
	// their own processes against a NATS server or cluster.
	UpOnly bool
}

// AdminTokenFile is where the first start writes the admin token (mode 0600).
const AdminTokenFile = "admin.token"

// Run starts everything and blocks until ctx ends, then stops in order: services drain their
// consumers and finish in-flight work, the connection flushes, the server shuts down.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	start := time.Now()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	tel, err := telemetry.Setup(ctx, "outpost-hub", version.Version)
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()

	// Hub services sign in as "hub" with the password kept in <data>/hub.secret (0600); every
	// other connection (bridges) goes through the agents service's auth callout.
	sec, err := dataDirSecrets(cfg.DataDir)
	if err != nil {
		return err
	}
	relKey, err := release.LoadOrCreateKey(filepath.Join(cfg.DataDir, release.KeyFile))
	if err != nil {
		return err
	}
	issuerPub, _ := sec.Callout.PublicKey()
	storeDir := filepath.Join(cfg.DataDir, "jetstream")
	if err := migrateStoreAccount(storeDir, log); err != nil {
		return err
	}
	tlsc, err := setupTLS(cfg, log)
	if err != nil {
		return err
	}
	srv, err := bus.StartServer(bus.ServerConfig{
		Name: "outpost-hub", StoreDir: storeDir, Listen: cfg.NATSAddr,
		SyncInterval: time.Second, Logger: log,
		TLS: tlsc.nats, WebSocket: cfg.WSSAddr, WebSocketTLS: tlsc.wss,
		Configure: func(o *server.Options) error {
			// Hub services in HUB, bridges in BRIDGES (placed there by the agents service's
			// auth callout): the same accounts as deployments/nats.
			if err := bus.ApplyAccounts(o, bus.AccountVars{HubPassword: sec.HubPassword, SysPassword: sec.SysPassword, CalloutIssuer: issuerPub}); err != nil {
				return err
			}
			// Bridges sign the nonce with their NKey; the callout verifies the signature.
			o.AlwaysEnableNonce = true
			return nil
		},
	})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	hubAuth := nats.UserInfo(hubUser, sec.HubPassword)
	nc, err := srv.Connect("outpost-hub", hubAuth)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	topo := Topology(cfg.Limits)
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = bus.Provision(pctx, js, topo)
	cancel()
	if err != nil {
		return fmt.Errorf("provision the bus: %w", err)
	}
	toks, err := tokenStore(ctx, js, sec.TokenKey)
	if err != nil {
		return err
	}
	if err := ensureAdminToken(ctx, toks, cfg.DataDir, cfg.Out); err != nil {
		return err
	}
	deps := Deps{NC: nc, JS: js, Topology: topo, Telemetry: tel, Logger: log, DataDir: cfg.DataDir, Config: cfg,
		Server: srv, Issuer: sec.Callout, HubAuth: hubAuth, CurveKey: sec.Curve, ReleaseKey: relKey}
	services := Registry(cfg, toks, tlsc)
	// /healthz says 200 once every service answers, as for `outpost serve`: a client that
	// waited for it can use any of them at once
	waitFor := append([]string{"agents", "cmdb", "importer"}, slices.Sorted(maps.Keys(answering))...)
	if !cfg.NoLocalBridge {
		waitFor = append(waitFor, "local-bridge") // one command gives a working system
	}
	httpURL := "http://" + cfg.HTTPAddr
	if tlsc.certFile != "" {
		httpURL = "https://" + cfg.HTTPAddr
	}
	return runServices(ctx, deps, services, waitFor, func() {
		log.Info("outpost hub up", "http", httpURL, "nats", srv.ClientURL(), "wss", cfg.WSSAddr, "data", cfg.DataDir,
			"services", len(services), "startup", time.Since(start).Round(time.Millisecond))
		printBridgeHowTo(cfg.Out, cfg, tlsc, srv.Addr())
	})
}

// tokenStore is the API token store on the hub's bus.
func tokenStore(ctx context.Context, js jetstream.JetStream, key []byte) (*tokens.Store, error) {
	tokenKV, err := js.KeyValue(ctx, bus.KVTokens)
	if err != nil {
		return nil, err
	}
	return tokens.New(tokenKV, key)
}

// answering are readiness probes of services that say nothing when they serve: ready once
// one of their replicas (any process's: they are active/standby) answers a ping.
var answering = map[string]func(context.Context, *nats.Conn) bool{
	"discovery": servicePing("discovery"), "orchestration": servicePing("orchestration"),
	"correlation": servicePing("correlation"), "mapping": servicePing("mapping"),
}

// servicePing asks $SRV.PING.<name>: some replica of the service serves its endpoints.
func servicePing(name string) func(context.Context, *nats.Conn) bool {
	return func(ctx context.Context, nc *nats.Conn) bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := nc.RequestWithContext(ctx, "$SRV.PING."+name, nil)
		return err == nil
	}
}

// runServices runs services concurrently on deps and blocks until ctx ends or one fails,
// then stops them all and waits: services drain their consumers and finish in-flight work,
// the connection flushes. waitFor are the services /healthz waits for (those not run are
// ignored); started is called once every service is launched.
func runServices(ctx context.Context, deps Deps, services []Service, waitFor []string, started func()) error {
	log := deps.Logger
	running := map[string]bool{}
	for _, s := range services {
		running[s.Name] = true
	}
	var wait []string
	for _, n := range waitFor {
		if running[n] {
			wait = append(wait, n)
		}
	}
	deps.ready = newReadiness(wait...)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	for _, n := range wait {
		if probe := answering[n]; probe != nil {
			go func() {
				for sctx.Err() == nil {
					if probe(sctx, deps.NC) {
						deps.ready.mark(n)()
						return
					}
					select {
					case <-sctx.Done():
					case <-time.After(200 * time.Millisecond):
					}
				}
			}()
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(services))
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(sctx, deps); err != nil && sctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", s.Name, err)
			}
		}()
	}
	if started != nil {
		started()
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("a service failed; stopping", "err", runErr)
	}
	stop()
	wg.Wait()
	if err := deps.NC.FlushTimeout(2 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("flush", "err", err)
	}
	return runErr
}

// Topology is the bus the hub provisions: the default table plus every service's consumers.
func Topology(l bus.Limits) bus.Topology {
	return bus.DefaultTopology(l).WithConsumers(cmdb.Consumers(cmdb.DefaultConfig().Partitions)...).
		WithConsumers(discovery.Consumers()...).WithConsumers(orchestration.Consumers()...).
		WithConsumers(correlation.Consumers()...).WithConsumers(importer.Consumers()...)
}

// Registry lists the hub services `outpost up` runs in process. Later services add theirs here.
func Registry(cfg Config, toks *tokens.Store, tlsc hubTLS) []Service {
	return []Service{
		{Name: "agents", Run: func(ctx context.Context, d Deps) error {
			return agents.Run(ctx, agents.Config{Version: version.Semver()}, agents.Deps{NC: d.NC, JS: d.JS,
				Issuer: d.Issuer, Kick: kick(d.Server), Logger: d.Logger, Ready: d.ready.mark("agents"), HubKey: publicKey(d.CurveKey),
				ReleaseKey: releasePublic(d.ReleaseKey)})
		}},
		{Name: "cmdb", Run: func(ctx context.Context, d Deps) error {
			cc := cmdb.DefaultConfig()
			cc.DSN = cfg.CMDB
			if cc.DSN == "" {
				cc.DSN = "sqlite://" + filepath.Join(d.DataDir, "cmdb.db")
			}
			cc.Version = version.Semver()
			return cmdb.Run(ctx, cc, cmdb.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Tracer: d.Telemetry.Tracer, Ready: d.ready.mark("cmdb")})
		}},
		{Name: "discovery", Run: func(ctx context.Context, d Deps) error {
			dc := discovery.DefaultConfig()
			dc.DataDir = filepath.Join(d.DataDir, "discovery")
			if cfg.DiscoveryRetention > 0 {
				dc.Retention = cfg.DiscoveryRetention
			}
			// One hub per data dir: a restarted hub (even after SIGKILL) takes its own
			// active lease back at once instead of waiting for it to expire.
			dc.Replica = "hub-" + replicaName(d.DataDir)
			dc.ShareRuns = !cfg.DiscoveryStandby
			return discovery.Run(ctx, dc, discovery.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, CurveKey: d.CurveKey, Tracer: d.Telemetry.Tracer})
		}},
		{Name: "orchestration", Run: func(ctx context.Context, d Deps) error {
			oc := orchestration.DefaultConfig()
			oc.Replica = "hub-" + replicaName(d.DataDir) // takes its own lease back after a crash
			return orchestration.Run(ctx, oc, orchestration.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Tracer: d.Telemetry.Tracer})
		}},
		{Name: "correlation", Run: func(ctx context.Context, d Deps) error {
			cc := correlation.DefaultConfig()
			cc.Replica = "hub-" + replicaName(d.DataDir) // takes its own lease back after a restart
			cc.RulesDir, cc.Notifiers = d.Config.CorrelationRules, d.Config.Notifiers
			return correlation.Run(ctx, cc, correlation.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Tracer: d.Telemetry.Tracer})
		}},
		{Name: "importer", Run: func(ctx context.Context, d Deps) error {
			return importer.Run(ctx, importer.DefaultConfig(), importer.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Tracer: d.Telemetry.Tracer,
				Ready: d.ready.mark("importer")})
		}},
		{Name: "mapping", Run: func(ctx context.Context, d Deps) error {
			mc := mapping.DefaultConfig()
			mc.Replica = "hub-" + replicaName(d.DataDir) // takes its own scheduler lease back after a restart
			mc.PatternsDir = cfg.MappingPatterns
			return mapping.Run(ctx, mc, mapping.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Tracer: d.Telemetry.Tracer})
		}},
		{Name: "local-bridge", UpOnly: true, Run: func(ctx context.Context, d Deps) error {
			if cfg.NoLocalBridge {
				return nil
			}
			return runLocalBridge(ctx, d)
		}},
		{Name: "lab", UpOnly: true, Run: func(ctx context.Context, d Deps) error {
			if !cfg.Lab {
				return nil
			}
			return runLabDemo(ctx, cfg, d)
		}},
		{Name: "dlq", Run: func(ctx context.Context, d Deps) error {
			dc := deadletters.DefaultConfig()
			dc.Version = version.Semver()
			svc, err := deadletters.New(dc, deadletters.Deps{NC: d.NC, JS: d.JS, Logger: d.Logger, Meter: d.Telemetry.Meter.Meter("outpost/dlq")})
			if err != nil {
				return err
			}
			return svc.Run(ctx)
		}},
		{Name: "capacity", Run: func(ctx context.Context, d Deps) error {
			// every store against its limits: near, full and unbounded stores raise events
			w, err := capacity.New(capacity.DefaultConfig(), capacity.Deps{JS: d.JS, Logger: d.Logger, Meter: d.Telemetry.Meter.Meter("outpost/bus")})
			if err != nil {
				return err
			}
			return w.Run(ctx)
		}},
		{Name: "gateway", Run: func(ctx context.Context, d Deps) error {
			gc := gateway.DefaultConfig()
			gc.Addr = cfg.HTTPAddr
			gc.TLSCert, gc.TLSKey = tlsc.certFile, tlsc.keyFile
			gc.Version = version.Version
			return gateway.Run(ctx, gc, gateway.Deps{NC: d.NC, JS: d.JS, Tokens: toks, Topology: d.Topology, Logger: d.Logger,
				Pending: d.ready.pending, Tracer: d.Telemetry.Tracer, Registry: d.Metrics})
		}},
	}
}

// ensureAdminToken creates the first admin token and writes it to <data>/admin.token, once.
func ensureAdminToken(ctx context.Context, toks *tokens.Store, dataDir string, out io.Writer) error {
	path := filepath.Join(dataDir, AdminTokenFile)
	// A token that no longer verifies (revoked, or unsigned from before records were signed)
	// is replaced; a file others may read is refused.
	if b, err := keyfile.Read(path); err == nil && len(b) > 0 {
		if _, err := toks.Verify(ctx, string(trimNL(b))); err == nil {
			return nil
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	secret, _, err := toks.Create(ctx, "admin", tokens.RoleAdmin)
	if err != nil {
		return fmt.Errorf("create the admin token: %w", err)
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Fprintf(out, "Admin API token (shown once; also in %s, mode 0600):\n  %s\n", path, secret)
	return nil
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// replicaName names this hub in leases: the host and the data dir, stable across restarts.
func replicaName(dataDir string) string {
	host, _ := os.Hostname()
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(host + "\x00" + abs))
	return hex.EncodeToString(sum[:6])
}

// publicKey is a key pair's public key ("" for none).
func releasePublic(k *release.Key) string {
	if k == nil {
		return ""
	}
	return k.Public()
}

func publicKey(kp nkeys.KeyPair) string {
	if kp == nil {
		return ""
	}
	pub, _ := kp.PublicKey()
	return pub
}
