package hub

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/keyfile"
	"github.com/outpost-dev/outpost/libs/release"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// Secrets are what every process of one hub must share: `outpost up` keeps them as files in
// its data dir; service replicas on a NATS cluster (`outpost serve`, each with its own data
// dir) read them from one credentials file (--nats-creds) made by `outpost hub-creds`.
type Secrets struct {
	HubPassword string        // the HUB account's user "hub"
	SysPassword string        // the SYS account's user "sys" (the NATS servers' config only)
	Callout     nkeys.KeyPair // signs the auth callout's answers (CALLOUT_ISSUER is its public key)
	Curve       nkeys.KeyPair // seals target credentials to bridges
	TokenKey    []byte        // signs API token records
	CredKey     []byte        // encrypts discovery's stored target credentials (AES-256)
	AdminToken  string        // the bootstrap admin API token every gateway registers and writes to <data>/admin.token
	// Release signs bridge builds (libs/release). Every replica's agents service names its
	// public half to bridges, which pin it: replicas must share one key. nil: a credentials
	// file made before it was added (bridges of such a hub get no upgrades).
	Release *release.Key
}

// dataDirSecrets loads (or makes, on first start) the secrets of an all-in-one hub from its
// data dir. Discovery keeps its own credential key there (discovery/credentials.key).
func dataDirSecrets(dataDir string) (Secrets, error) {
	var s Secrets
	var err error
	if s.Callout, err = loadOrCreateKey(filepath.Join(dataDir, "callout.nk"), nkeys.CreateAccount); err != nil {
		return s, err
	}
	if s.Curve, err = loadOrCreateKey(filepath.Join(dataDir, "hub.xk"), nkeys.CreateCurveKeys); err != nil {
		return s, err
	}
	if s.HubPassword, err = ServicePassword(dataDir); err != nil {
		return s, err
	}
	if s.SysPassword, err = SystemPassword(dataDir); err != nil {
		return s, err
	}
	if s.TokenKey, err = loadTokenKey(dataDir); err != nil {
		return s, err
	}
	return s, nil
}

// NewSecrets makes a fresh set for a new hub.
func NewSecrets() (Secrets, error) {
	var s Secrets
	var err error
	if s.Callout, err = nkeys.CreateAccount(); err != nil {
		return s, err
	}
	if s.Curve, err = nkeys.CreateCurveKeys(); err != nil {
		return s, err
	}
	if s.TokenKey, err = tokens.NewKey(); err != nil {
		return s, err
	}
	s.CredKey = make([]byte, 32)
	if _, err = rand.Read(s.CredKey); err != nil {
		return s, err
	}
	s.HubPassword, s.SysPassword = randomSecret(), randomSecret()
	buf := make([]byte, 32)
	if _, err = rand.Read(buf); err != nil {
		return s, err
	}
	s.AdminToken = "opt_" + base64.RawURLEncoding.EncodeToString(buf)
	if s.Release, err = release.NewKey(); err != nil {
		return s, err
	}
	return s, nil
}

// credsHeader opens a credentials file: what it is and how to treat it.
const credsHeader = `# Outpost hub credentials (outpost hub-creds): every outpost serve process of
# this hub reads them with --nats-creds. Keep this file 0600, out of version control,
# and never paste it anywhere: it signs bridges in and decrypts target credentials.
`

// WriteCredsFile writes s to path (0600); an existing file is never overwritten.
func WriteCredsFile(path string, s Secrets) error {
	callout, err := s.Callout.Seed()
	if err != nil {
		return err
	}
	curve, err := s.Curve.Seed()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(credsHeader)
	for _, kv := range [][2]string{
		{"hub_password", s.HubPassword}, {"sys_password", s.SysPassword},
		{"callout_seed", string(callout)}, {"curve_seed", string(curve)},
		{"token_key", base64.StdEncoding.EncodeToString(s.TokenKey)},
		{"credential_key", base64.StdEncoding.EncodeToString(s.CredKey)},
		{"admin_token", s.AdminToken},
	} {
		fmt.Fprintf(&b, "%s: %s\n", kv[0], kv[1])
	}
	if s.Release != nil {
		fmt.Fprintf(&b, "release_seed: %s\n", s.Release.Seed())
	}
	// Whole or not at all (keyfile.Create): a failed write leaves no partial credentials.
	if err := keyfile.Create(path, b.Bytes()); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: a hub's credentials are made once (remove it only to start a new hub)", path)
		}
		return err
	}
	return nil
}

// ReadCredsFile reads a credentials file; it reports every missing or bad field, and refuses
// a file others may read.
func ReadCredsFile(path string) (Secrets, error) {
	var s Secrets
	raw, err := keyfile.Read(path)
	if err != nil {
		return s, fmt.Errorf("--nats-creds: %w", err)
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return s, fmt.Errorf("%s:%d: want \"name: value\" (a file made by outpost hub-creds)", path, n)
		}
		fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	var errs []error
	need := func(k string) string {
		v := fields[k]
		if v == "" {
			errs = append(errs, fmt.Errorf("%s: %s is missing", path, k))
		}
		return v
	}
	key := func(k string, size int) []byte {
		v := need(k)
		if v == "" {
			return nil
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(b) != size {
			errs = append(errs, fmt.Errorf("%s: %s is not %d bytes of base64", path, k, size))
			return nil
		}
		return b
	}
	seed := func(k string) nkeys.KeyPair {
		v := need(k)
		if v == "" {
			return nil
		}
		kp, err := nkeys.FromSeed([]byte(v))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s is not a key seed: %v", path, k, err))
		}
		return kp
	}
	s.HubPassword, s.SysPassword, s.AdminToken = need("hub_password"), fields["sys_password"], need("admin_token")
	s.Callout, s.Curve = seed("callout_seed"), seed("curve_seed")
	s.TokenKey, s.CredKey = key("token_key", tokens.KeySize), key("credential_key", 32)
	// Optional: files made before the release key was shared through them have none.
	if v := fields["release_seed"]; v != "" {
		k, err := release.KeyFromSeed(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: release_seed is %v", path, err))
		}
		s.Release = k
	}
	return s, errors.Join(errs...)
}

// placeCredentialKey puts the hub's credential key where discovery reads it
// (<data>/discovery/credentials.key); a different key already there is an error, never
// overwritten: credentials sealed with it would be lost.
func placeCredentialKey(dataDir string, key []byte) error {
	dir := filepath.Join(dataDir, "discovery")
	path := filepath.Join(dir, "credentials.key")
	if b, err := keyfile.Read(path); err == nil {
		if !bytes.Equal(b, key) {
			return fmt.Errorf("%s differs from the credential key of --nats-creds: this data dir belongs to another hub (use a fresh --data, or restore the matching credentials)", path)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, key, 0o600)
}

// NATSAuth is the NATS option a hub service process signs in with, from these secrets.
func (s Secrets) NATSAuth() nats.Option { return nats.UserInfo(hubUser, s.HubPassword) }
