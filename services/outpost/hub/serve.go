package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/keyfile"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/libs/telemetry"
	"github.com/outpost-dev/outpost/libs/telemetry/metrics"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// ServeConfig is `outpost serve SERVICE…`: some of the hub's services, as replicas, against a
// NATS server or cluster someone else runs (deployments/nats, scripts/cluster.sh). Any number
// of such processes share the work: every service's durable consumers are shared pull
// consumers and its leases (libs/lease) decide what only one replica may do.
type ServeConfig struct {
	Services []string // names from Registry; "all" is every one `outpost up` runs but its local bridge and lab
	NATSURL  string   // nats://host:port[,nats://…] — a cluster's nodes
	// CredsFile is the hub's credentials (outpost hub-creds): its NATS password and the keys
	// every replica shares. Empty: the secrets of DataDir (a process beside `outpost up` on
	// the same --data).
	CredsFile string
	// TLS to the NATS servers: CA to verify them, optional client certificate (mTLS).
	NATSCA, NATSCert, NATSKey string
	DataDir                   string
	HTTPAddr                  string // the gateway's
	CMDB                      string
	TLSCert, TLSKey           string // the gateway's HTTPS, optional
	// Replicas of every stream and bucket the services create: 0 picks 3 on a cluster, 1 on a
	// single server.
	Replicas int
	Limits   bus.Limits
	// MetricsAddr is the operations port (/metrics, /healthz): host:port, "" for
	// DefaultMetricsAddr (a free loopback port), or MetricsOff.
	MetricsAddr string
	// DiscoveryStandby: discovery replicas active/standby instead of sharing runs (Config).
	DiscoveryStandby bool
	Out              io.Writer
}

// ServeNames lists the services `outpost serve` can run.
func ServeNames() []string {
	var out []string
	for _, s := range Registry(Config{}, nil, hubTLS{}) {
		if !s.UpOnly {
			out = append(out, s.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Validate reports every problem at once.
func (c ServeConfig) Validate() error {
	var errs []error
	if len(c.Services) == 0 {
		errs = append(errs, fmt.Errorf("name the services to run (or all): %s", strings.Join(ServeNames(), ", ")))
	}
	known := ServeNames()
	for _, s := range c.Services {
		if s != "all" && !slices.Contains(known, s) {
			errs = append(errs, fmt.Errorf("service %q: want one of %s, or all", s, strings.Join(known, ", ")))
		}
	}
	if c.NATSURL == "" {
		errs = append(errs, errors.New("--nats-url is empty: give the NATS servers, e.g. nats://127.0.0.1:4222,nats://127.0.0.1:4223"))
	} else if err := (bus.ConnectConfig{URL: c.NATSURL, CAFile: c.NATSCA, CertFile: c.NATSCert, KeyFile: c.NATSKey}).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data is empty: a service process needs a directory of its own"))
	}
	if c.CredsFile != "" {
		if _, err := os.Stat(c.CredsFile); err != nil {
			errs = append(errs, fmt.Errorf("--nats-creds: %w", err))
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("--replicas %d: want 1 to 5, or 0 to pick 3 on a cluster and 1 on a single server", c.Replicas))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if err := validMetricsAddr(c.MetricsAddr); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// selected expands "all" and drops repeats, in Registry order.
func (c ServeConfig) selected() map[string]bool {
	out := map[string]bool{}
	for _, s := range c.Services {
		if s == "all" {
			for _, n := range ServeNames() {
				out[n] = true
			}
			continue
		}
		out[s] = true
	}
	return out
}

// Serve runs the selected services against the NATS of cfg until ctx ends.
func Serve(ctx context.Context, cfg ServeConfig, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	want := cfg.selected()
	var sec Secrets
	var err error
	if cfg.CredsFile != "" {
		sec, err = ReadCredsFile(cfg.CredsFile)
	} else {
		sec, err = dataDirSecrets(cfg.DataDir)
	}
	if err != nil {
		return err
	}
	if want["discovery"] && sec.CredKey != nil {
		if err := placeCredentialKey(cfg.DataDir, sec.CredKey); err != nil {
			return err
		}
	}
	tel, err := telemetry.Setup(ctx, "outpost-serve", version.Version)
	if err != nil {
		return err
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()

	hubAuth := nats.UserInfo(hubUser, sec.HubPassword)
	nc, err := bus.Connect(bus.ConnectConfig{URL: cfg.NATSURL, Name: "outpost-serve", CAFile: cfg.NATSCA, CertFile: cfg.NATSCert, KeyFile: cfg.NATSKey,
		Options: []nats.Option{hubAuth}, Logger: log})
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := waitConnected(ctx, nc, 60*time.Second); err != nil {
		return err
	}
	replicas := cfg.Replicas
	if replicas == 0 {
		replicas = 1
		if nc.ConnectedClusterName() != "" {
			replicas = 3 // every message survives the loss of one node
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	js = bus.WithReplicas(js, replicas)
	limits := cfg.Limits
	limits.Replicas = replicas
	topo := Topology(limits)
	// A cluster just started elects its JetStream leaders for a few seconds: retry.
	if err := retryFor(ctx, 3*time.Minute, func() error {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		err := bus.Provision(pctx, js, shuffled(topo))
		if err != nil {
			log.Warn("provision the bus: retrying", "err", err)
		}
		return err
	}); err != nil {
		return fmt.Errorf("provision the bus: %w", err)
	}
	toks, err := tokenStore(ctx, js, sec.TokenKey)
	if err != nil {
		return err
	}
	if want["gateway"] {
		if sec.AdminToken != "" {
			err = registerAdminToken(ctx, toks, cfg.DataDir, sec.AdminToken, log)
		} else {
			err = ensureAdminToken(ctx, toks, cfg.DataDir, cfg.Out)
		}
		if err != nil {
			return err
		}
	}
	hc := Config{DataDir: cfg.DataDir, HTTPAddr: cfg.HTTPAddr, CMDB: cfg.CMDB, NoLocalBridge: true, Limits: limits, Out: cfg.Out,
		DiscoveryStandby: cfg.DiscoveryStandby}
	var services []Service
	var names []string
	for _, s := range Registry(hc, toks, hubTLS{certFile: cfg.TLSCert, keyFile: cfg.TLSKey}) {
		if want[s.Name] && !s.UpOnly {
			services = append(services, s)
			names = append(names, s.Name)
		}
	}
	relKey, err := serveReleaseKey(cfg, sec, log)
	if err != nil {
		return err
	}
	// One registry per process: its operations port serves it, and so does its gateway's
	// /metrics when it runs one (with the hub's view of the bus added).
	reg := metrics.NewRegistry()
	sc := newServeCollector(js, names, serviceConsumers())
	if err := reg.Register(sc); err != nil {
		return err
	}
	services = sc.trackRunning(services)
	if addr := cfg.MetricsAddr; addr != MetricsOff {
		if addr == "" {
			addr = DefaultMetricsAddr
		}
		services = append(services, metricsService(addr, cfg.DataDir, reg, log))
	}
	deps := Deps{NC: nc, JS: js, Topology: topo, Telemetry: tel, Logger: log, DataDir: cfg.DataDir, Config: hc,
		Issuer: sec.Callout, HubAuth: hubAuth, CurveKey: sec.Curve, ReleaseKey: relKey, Metrics: reg}
	// /healthz waits for every service this process runs to be served by some replica: a
	// request through this gateway right after must not find "service not running".
	return runServices(ctx, deps, services, append([]string{"agents", "cmdb", "importer"}, slices.Sorted(maps.Keys(answering))...), func() {
		log.Info("outpost serve up", "services", strings.Join(names, ","), "nats", nc.ConnectedUrlRedacted(),
			"cluster", nc.ConnectedClusterName(), "replicas", replicas, "http", cfg.HTTPAddr, "data", cfg.DataDir)
	})
}

// serveReleaseKey is the key that signs bridge builds, whose public half the agents service
// names to approved bridges (they pin it and run only builds it signed). Replicas must all
// name the same one, so on a cluster it comes from the hub's credentials file; a process
// without one sits beside `outpost up` on its data dir and uses the same <data>/release.key
// as up (made on first use). A credentials file made before it carried the key gives none:
// bridges then get no upgrades, which is said once at start.
func serveReleaseKey(cfg ServeConfig, sec Secrets, log *slog.Logger) (*release.Key, error) {
	if cfg.CredsFile == "" {
		return release.LoadOrCreateKey(filepath.Join(cfg.DataDir, release.KeyFile))
	}
	if sec.Release == nil {
		log.Warn("the hub's credentials file has no release_seed (made by an older outpost hub-creds): bridges get no release key and no self-upgrades",
			"creds", cfg.CredsFile)
	}
	return sec.Release, nil
}

// registerAdminToken makes sure the bootstrap admin token of the hub's credentials exists
// (the first gateway to start creates it; the others find it) and writes it to
// <data>/admin.token. A revoked bootstrap token stays revoked.
func registerAdminToken(ctx context.Context, toks *tokens.Store, dataDir, secret string, log *slog.Logger) error {
	if _, err := toks.Verify(ctx, secret); err != nil {
		if _, err := toks.Register(ctx, "admin", tokens.RoleAdmin, secret); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("register the admin token: %w", err)
		}
		if _, err := toks.Verify(ctx, secret); err != nil {
			log.Warn("the bootstrap admin token of the hub's credentials was revoked: create API tokens with outpost tokens create")
			return nil
		}
	}
	path := filepath.Join(dataDir, AdminTokenFile)
	if b, err := keyfile.Read(path); err == nil && string(trimNL(b)) == secret {
		return nil
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// waitConnected waits for the first connection (the client retries on its own).
func waitConnected(ctx context.Context, nc *nats.Conn, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !nc.IsConnected() {
		if time.Now().After(deadline) {
			return fmt.Errorf("no NATS server of %s answered within %s: is it running, and are the URL, credentials and CA right?", bus.RedactURL(nc.Opts.Url+","+strings.Join(nc.Opts.Servers, ",")), d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// retryFor calls f until it succeeds or d passes.
func retryFor(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// shuffled is t with its streams, buckets and consumers each in a random order: replicas
// starting together on a fresh cluster then rarely create the same one at the same moment,
// which nats-server may leave unanswered (bus.WithReplicas retries it, after a timeout).
func shuffled(t bus.Topology) bus.Topology {
	t.Streams, t.KV, t.Consumers = slices.Clone(t.Streams), slices.Clone(t.KV), slices.Clone(t.Consumers)
	rand.Shuffle(len(t.Streams), func(i, j int) { t.Streams[i], t.Streams[j] = t.Streams[j], t.Streams[i] })
	rand.Shuffle(len(t.KV), func(i, j int) { t.KV[i], t.KV[j] = t.KV[j], t.KV[i] })
	rand.Shuffle(len(t.Consumers), func(i, j int) { t.Consumers[i], t.Consumers[j] = t.Consumers[j], t.Consumers[i] })
	return t
}
