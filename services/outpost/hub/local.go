package hub

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/keyfile"
	"github.com/outpost-dev/outpost/libs/version"
	"github.com/outpost-dev/outpost/services/agents"
	"github.com/outpost-dev/outpost/services/bridge"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// LocalSite is the site of the in-process bridge `outpost up` runs, so one command gives a
// working system: it may probe this machine's loopback only.
const (
	LocalSite  = "local"
	LocalRange = "127.0.0.0/8"
)

// runLocalBridge runs a bridge for site "local" in this process, connected in-process (no
// socket), auto-approved on its first start.
func runLocalBridge(ctx context.Context, d Deps) error {
	// The auth callout must answer before the bridge connects: a refused in-process
	// connection stalls for the server's write deadline (10 s) before it can retry.
	if err := d.ready.wait(ctx, "agents"); err != nil {
		return nil
	}
	dir := filepath.Join(d.DataDir, "local-bridge")
	token := ""
	if _, err := os.Stat(filepath.Join(dir, "identity.nk")); errors.Is(err, fs.ErrNotExist) {
		// First start: create the site with an auto-approving token for our bridge.
		var reply agents.SiteAddReply
		err := retry(ctx, func() error {
			return bus.Request(ctx, d.NC, "agents", "site_add",
				agents.SiteAddRequest{Name: LocalSite, Ranges: []string{LocalRange}, AutoApprove: true}, &reply)
		})
		if err != nil {
			return fmt.Errorf("create site %s: %w", LocalSite, err)
		}
		token = reply.Token
	}
	cfg := bridge.DefaultConfig()
	cfg.Hub = inProcessHubURL(d.Server)
	cfg.Site, cfg.Name, cfg.Token, cfg.DataDir = LocalSite, "local-bridge", token, dir
	cfg.Version = version.Version
	return bridge.Run(ctx, cfg, bridge.Deps{Logger: d.Logger, Kinds: kinds.All(), Ready: d.ready.mark("local-bridge"), Tracer: d.Telemetry.Tracer,
		ConnectOptions: []nats.Option{nats.InProcessServer(d.Server.Inner())}})
}

// inProcessHubURL is the hub URL of a bridge this process runs. Its connection is in
// process (no socket), so the URL is only what the bridge reports: a loopback nats:// one,
// whatever the hub binds, so the client neither insists on a TLS handshake over the pipe
// nor trips the bridge's plaintext-to-a-remote-hub check.
func inProcessHubURL(srv *bus.Server) string {
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		return fmt.Sprintf("nats://127.0.0.1:%d", a.Port)
	}
	return "nats://127.0.0.1:4222"
}

// retry calls f until it succeeds or 30 s pass: services start concurrently.
func retry(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// kick closes every connection of an authorized user of the embedded server.
// Without an embedded server (outpost serve) there is none: a revoked agent is refused at its
// next connection instead.
func kick(srv *bus.Server) func(user string) error {
	if srv == nil {
		return nil
	}
	return func(user string) error {
		cz, err := srv.Inner().Connz(&server.ConnzOptions{User: user, Limit: 10_000})
		if err != nil {
			return err
		}
		var errs []error
		for _, c := range cz.Conns {
			errs = append(errs, srv.Inner().DisconnectClientByID(c.Cid))
		}
		return errors.Join(errs...)
	}
}

// loadOrCreateKey keeps a key seed in a 0600 file; one that others may read is refused.
func loadOrCreateKey(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	b, err := keyfile.LoadOrCreate(path, func() ([]byte, error) {
		kp, err := create()
		if err != nil {
			return nil, err
		}
		seed, err := kp.Seed()
		return append(seed, '\n'), err
	})
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("%s: not a key seed (restore it from a backup, or remove it to make a new one): %w", path, err)
	}
	return kp, nil
}

// TokenKeyFile holds the key that signs API token records (<data>/tokens.key, 0600).
const TokenKeyFile = "tokens.key"

// loadTokenKey reads (or creates) the key that signs API token records. Losing it only
// invalidates the API tokens: the hub then writes a new admin.token on its next start.
func loadTokenKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, TokenKeyFile)
	key, err := keyfile.LoadOrCreate(path, tokens.NewKey)
	if err != nil {
		return nil, err
	}
	if len(key) != tokens.KeySize {
		return nil, fmt.Errorf("%s: %d bytes, want %d: remove it (every API token is then re-issued: a new admin.token is written) or restore it from a backup",
			path, len(key), tokens.KeySize)
	}
	return key, nil
}

// ServicePassword returns the password hub services connect with, creating it on first use.
func ServicePassword(dataDir string) (string, error) { return secretFile(dataDir, "hub.secret") }

// SystemPassword is the password of the system account's user "sys" (operators' nats CLI).
func SystemPassword(dataDir string) (string, error) { return secretFile(dataDir, "sys.secret") }

// secretFile returns the secret kept in <data>/<name> (0600, refused when others may read
// it), creating it on first use.
func secretFile(dataDir, name string) (string, error) {
	path := filepath.Join(dataDir, name)
	b, err := keyfile.LoadOrCreate(path, func() ([]byte, error) { return []byte(randomSecret() + "\n"), nil })
	if err != nil {
		return "", err
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return "", fmt.Errorf("%s is empty: remove it (a new password is made on the next start) or restore it", path)
	}
	return pw, nil
}

// ServiceAuth is the NATS option a hub service process signs in with.
func ServiceAuth(dataDir string) (nats.Option, error) {
	pw, err := ServicePassword(dataDir)
	if err != nil {
		return nil, err
	}
	return nats.UserInfo(hubUser, pw), nil
}

func randomSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// readiness tracks which in-process services are serving, for /healthz.
type readiness struct {
	mu      sync.Mutex
	waiting map[string]bool
}

func newReadiness(names ...string) *readiness {
	r := &readiness{waiting: map[string]bool{}}
	for _, n := range names {
		r.waiting[n] = true
	}
	return r
}

func (r *readiness) mark(name string) func() {
	return func() {
		r.mu.Lock()
		delete(r.waiting, name)
		r.mu.Unlock()
	}
}

// wait blocks until name is serving (or ctx ends).
func (r *readiness) wait(ctx context.Context, name string) error {
	for {
		r.mu.Lock()
		waiting := r.waiting[name]
		r.mu.Unlock()
		if !waiting {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// pending lists the services not serving yet.
func (r *readiness) pending() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for n := range r.waiting {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
