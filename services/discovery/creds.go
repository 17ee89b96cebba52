package discovery

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/keyfile"
)

// KVCredentials holds target credentials, encrypted at rest; KVAffinity remembers which one
// worked for (site, type, ip).
const (
	KVCredentials = "credentials"
	KVAffinity    = "credential_affinity"
	KVSchedules   = "discovery_schedules"
	KVHosts       = "discovery_hosts"
	// KVPending holds a run's pending probes, one key per group (a host, a scan chunk, the
	// SNMP sweep of a /24): written before the probes are published, so a restart knows
	// every probe that may be out (pending.go).
	KVPending = "discovery_pending"
)

// CredentialTypes are the types a credential may have (libs/envelope holds the list, with
// which probe kind takes which).
var CredentialTypes = envelope.CredentialTypes

// Credential is a stored credential as listed: never its secret.
type Credential = discoveryapi.Credential

// storedCredential is the KV record: Sealed is AES-GCM(nonce || ciphertext) of secretPart.
type storedCredential struct {
	Credential
	Sealed []byte `json:"sealed"`
	// Bound is the version of the associated data: 2 binds name, site, type, username and
	// allow_insecure (none can be rewritten in KV without the key); 0 is the name only,
	// as records were stored before.
	Bound int `json:"bound,omitempty"`
}

// boundData is the AEAD's associated data of a stored credential.
func boundData(c Credential, version int) []byte {
	if version < 2 {
		return []byte(c.Name)
	}
	b, _ := json.Marshal([]any{"outpost-credential-v2", c.Name, c.Site, c.Type, c.Username, c.AllowInsecure})
	return b
}

type secretPart struct {
	Secret string            `json:"secret"`
	Fields map[string]string `json:"fields,omitempty"`
}

// clearCredential is a credential opened for sealing to a probe.
type clearCredential struct {
	Name, Type, Username string
	Secret               string
	Fields               map[string]string
	AllowInsecure        bool
}

// LogValue keeps secrets out of logs.
func (c clearCredential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("type", c.Type))
}

// credStore keeps credentials encrypted in KV with a key from the data dir.
type credStore struct {
	kv   jetstream.KeyValue
	aead cipher.AEAD
	now  func() time.Time
}

// loadKey reads (or creates, 0600) the AES-256 key in dataDir/credentials.key; a key file
// that group or others may read is refused (libs/keyfile).
func loadKey(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "credentials.key")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("credential key: %w", err)
	}
	b, err := keyfile.LoadOrCreate(path, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("credential key: %w", err)
	}
	if len(b) != 32 {
		return nil, fmt.Errorf("credential key %s: %d bytes, want 32; restore it from backup (credentials cannot be read without it)", path, len(b))
	}
	return b, nil
}

func newCredStore(kv jetstream.KeyValue, key []byte, now func() time.Time) (*credStore, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, err
	}
	return &credStore{kv: kv, aead: aead, now: now}, nil
}

// CredentialAddRequest is svc.discovery.credentials_add.
type CredentialAddRequest = discoveryapi.CredentialAddRequest

// checkFields reports what is wrong with a credential's type-specific fields.
func checkFields(r CredentialAddRequest) []error {
	var errs []error
	switch r.Type {
	case envelope.CredHTTP:
		switch strings.ToLower(r.Fields["scheme"]) {
		case "", "basic":
			if r.Username == "" && r.Fields["scheme"] != "" {
				errs = append(errs, errors.New("fields.scheme basic needs a username"))
			}
		case "bearer":
		case "header":
			h := r.Fields["header_name"]
			if h == "" || strings.ContainsAny(h, " :\r\n") {
				errs = append(errs, errors.New("fields.header_name: name the header that carries the secret (e.g. X-Api-Key)"))
			}
		default:
			errs = append(errs, fmt.Errorf("fields.scheme %q: want basic, bearer or header", r.Fields["scheme"]))
		}
	case envelope.CredWinRM:
		switch a := strings.ToLower(r.Fields["auth"]); a {
		case "", "ntlm", "basic":
		default:
			errs = append(errs, fmt.Errorf("fields.auth %q: want ntlm (default) or basic", r.Fields["auth"]))
		}
	case envelope.CredSQL:
		switch t := strings.ToLower(r.Fields["tls"]); t {
		case "", "verify", "verify-full":
		case "insecure", "require", "prefer", "none", "disable":
			if !r.AllowInsecure {
				errs = append(errs, fmt.Errorf("fields.tls %s sends the secret without verified TLS: give allow_insecure too (admin), or leave it to verify", t))
			}
		default:
			errs = append(errs, fmt.Errorf("fields.tls %q: want verify, insecure (require) or none (disable)", r.Fields["tls"]))
		}
	}
	return errs
}

func (s *credStore) add(ctx context.Context, r CredentialAddRequest) (Credential, error) {
	var errs []error
	if !bus.ValidName(r.Name) {
		errs = append(errs, errors.New("name: give a name of letters, digits, - and _"))
	}
	if !slices.Contains(CredentialTypes, r.Type) {
		errs = append(errs, fmt.Errorf("type %q: want one of %s", r.Type, strings.Join(CredentialTypes, ", ")))
	}
	if r.Site == "" {
		errs = append(errs, errors.New("site: empty"))
	}
	if r.Secret == "" {
		errs = append(errs, errors.New("secret: empty"))
	}
	errs = append(errs, checkFields(r)...)
	if err := errors.Join(errs...); err != nil {
		return Credential{}, bus.Errorf(400, "credential: %v", err)
	}
	plain, _ := json.Marshal(secretPart{Secret: r.Secret, Fields: r.Fields})
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Credential{}, err
	}
	c := Credential{Name: r.Name, Type: r.Type, Site: r.Site, Username: r.Username, AllowInsecure: r.AllowInsecure, Created: s.now().UTC()}
	for k := range r.Fields {
		c.Fields = append(c.Fields, k)
	}
	slices.Sort(c.Fields)
	// name, site, type, username and allow_insecure are authenticated data: whoever can
	// write the KV cannot move the secret to another site, type or user, or relax it,
	// without the key
	sealed := s.aead.Seal(nonce, nonce, plain, boundData(c, 2))
	b, _ := json.Marshal(storedCredential{Credential: c, Sealed: sealed, Bound: 2})
	if _, err := s.kv.Put(ctx, r.Name, b); err != nil {
		return Credential{}, fmt.Errorf("store credential: %w", err)
	}
	return c, nil
}

func (s *credStore) list(ctx context.Context) ([]Credential, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := []Credential{}
	for k := range keys.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var sc storedCredential
		if json.Unmarshal(e.Value(), &sc) == nil {
			out = append(out, sc.Credential)
		}
	}
	slices.SortFunc(out, func(a, b Credential) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (s *credStore) remove(ctx context.Context, name string) error {
	if _, err := s.kv.Get(ctx, name); err != nil {
		return bus.Errorf(404, "credential %q not found", name)
	}
	return s.kv.Delete(ctx, name)
}

// open returns the credentials of a site of the given types (ssh: ssh; snmp: snmp and
// snmpv3), decrypted, sorted by name; only names when only is not empty.
func (s *credStore) open(ctx context.Context, site string, types []string, only []string) ([]clearCredential, error) {
	keys, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []clearCredential
	for k := range keys.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var sc storedCredential
		if json.Unmarshal(e.Value(), &sc) != nil || sc.Site != site || !slices.Contains(types, sc.Type) {
			continue
		}
		if len(only) > 0 && !slices.Contains(only, sc.Name) {
			continue
		}
		c, err := s.decrypt(sc)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b clearCredential) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// decrypt opens a stored credential's secret part.
func (s *credStore) decrypt(sc storedCredential) (clearCredential, error) {
	ns := s.aead.NonceSize()
	if len(sc.Sealed) < ns {
		return clearCredential{}, fmt.Errorf("credential %s: sealed value too short", sc.Name)
	}
	if sc.Bound == 0 && sc.AllowInsecure {
		// allow_insecure came after binding: a record that claims it unbound was not written by us
		return clearCredential{}, fmt.Errorf("credential %s: allow_insecure is not bound to the secret; add the credential again", sc.Name)
	}
	plain, err := s.aead.Open(nil, sc.Sealed[:ns], sc.Sealed[ns:], boundData(sc.Credential, sc.Bound))
	if err != nil {
		return clearCredential{}, fmt.Errorf("credential %s: cannot decrypt: its name, site, type or username was changed outside the hub, or credentials.key in the data dir is not the one it was stored with", sc.Name)
	}
	var sp secretPart
	if err := json.Unmarshal(plain, &sp); err != nil {
		return clearCredential{}, fmt.Errorf("credential %s: %w", sc.Name, err)
	}
	return clearCredential{Name: sc.Name, Type: sc.Type, Username: sc.Username, Secret: sp.Secret, Fields: sp.Fields, AllowInsecure: sc.AllowInsecure}, nil
}

// credTypes maps a classifier's credential type to the stored types it covers.
func credTypes(t string) []string {
	if t == "snmp" {
		return []string{"snmp", "snmpv3"}
	}
	return []string{t}
}

// affinityKey is the affinity record of (site, type, ip).
func affinityKey(site, typ, ip string) string {
	return site + "." + typ + "." + strings.NewReplacer(".", "_", ":", "_").Replace(ip)
}
