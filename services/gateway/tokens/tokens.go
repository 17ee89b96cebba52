// Package tokens keeps the gateway's API tokens: random bearer secrets stored only as their
// SHA-256 hash (they carry 256 bits of entropy, so a slow hash adds nothing) in the KV bucket
// "tokens", each with a name and a role.
//
// Every record is signed with an HMAC key that only the hub holds (<data>/tokens.key), over
// the KV key it is stored under and every field. A record someone else managed to write into
// the bucket (the reply-subject trick of the 2026-12 security review) therefore does not
// verify, and neither does a real record copied under another key: the store fails closed.
package tokens

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
)

// Roles, from most to least powerful.
const (
	RoleAdmin    = "admin"    // everything, including tokens and approving agents
	RoleOperator = "operator" // runs discoveries and probes; approves nothing
	RoleViewer   = "viewer"   // reads
)

// Roles lists the valid roles.
var Roles = []string{RoleAdmin, RoleOperator, RoleViewer}

const prefix = "opt_" // recognisable in a leak scan, like other vendors' token prefixes

// Token is what is stored about a token: never the secret itself (libs/api/gateway lists it).
type Token = gatewayapi.Token

// record is a Token as stored: with the hub's signature.
type record struct {
	Token
	Sig string `json:"sig"`
}

// KeySize is the size of the signing key in bytes.
const KeySize = 32

// NewKey returns a fresh signing key (the hub keeps it in <data>/tokens.key).
func NewKey() ([]byte, error) {
	k := make([]byte, KeySize)
	_, err := rand.Read(k)
	return k, err
}

// ErrInvalid is returned for a token that does not exist or was revoked.
var ErrInvalid = errors.New("invalid or revoked token")

// ErrNotFound: no token has that id or name.
var ErrNotFound = errors.New("no such token")

// Store is the token store over a KV bucket.
type Store struct {
	kv  jetstream.KeyValue
	key []byte
}

// New returns the store on the bucket; key signs and verifies its records.
func New(kv jetstream.KeyValue, key []byte) (*Store, error) {
	if len(key) < KeySize {
		return nil, fmt.Errorf("token signing key: %d bytes, want %d (the hub keeps it in <data>/tokens.key)", len(key), KeySize)
	}
	return &Store{kv: kv, key: slices.Clone(key)}, nil
}

// mac signs a record stored under kvKey: the key is part of it, so a record is only valid
// where the gateway put it.
func (s *Store) mac(kvKey string, t Token) []byte {
	m := hmac.New(sha256.New, s.key)
	revoked := "0"
	if t.Revoked {
		revoked = "1"
	}
	for _, f := range []string{"outpost-api-token-v1", kvKey, t.ID, t.Name, t.Role, t.Created.UTC().Format(time.RFC3339Nano), revoked} {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

func (s *Store) encode(kvKey string, t Token) []byte {
	b, _ := json.Marshal(record{Token: t, Sig: hex.EncodeToString(s.mac(kvKey, t))})
	return b
}

// decode returns the token stored under kvKey if, and only if, the gateway wrote it: its
// signature verifies, its ID is its hash's and its role is one of Roles.
func (s *Store) decode(kvKey string, data []byte) (Token, bool) {
	var r record
	if json.Unmarshal(data, &r) != nil || r.Sig == "" {
		return Token{}, false
	}
	want, err := hex.DecodeString(r.Sig)
	if err != nil || !hmac.Equal(want, s.mac(kvKey, r.Token)) {
		return Token{}, false
	}
	if len(kvKey) < 12 || r.ID != kvKey[:12] || !slices.Contains(Roles, r.Role) {
		return Token{}, false
	}
	return r.Token, true
}

func hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Hash is how the store keys a secret: what a console session keeps instead of the secret.
func Hash(secret string) string { return hash(secret) }

// Create makes a token and returns its secret, to be shown once.
func (s *Store) Create(ctx context.Context, name, role string) (string, Token, error) {
	if !slices.Contains(Roles, role) {
		return "", Token{}, fmt.Errorf("role %q: want one of %s", role, strings.Join(Roles, ", "))
	}
	if strings.TrimSpace(name) == "" {
		return "", Token{}, errors.New("token name is empty: give --name")
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", Token{}, err
	}
	secret := prefix + base64.RawURLEncoding.EncodeToString(buf)
	t, err := s.Register(ctx, name, role, secret)
	return secret, t, err
}

// Register stores a token whose secret was made elsewhere: the bootstrap admin token of a
// hub's credentials file (outpost hub-creds), which every gateway replica registers and only
// the first one's write creates. A secret already stored fails with jetstream.ErrKeyExists.
func (s *Store) Register(ctx context.Context, name, role, secret string) (Token, error) {
	if !slices.Contains(Roles, role) {
		return Token{}, fmt.Errorf("role %q: want one of %s", role, strings.Join(Roles, ", "))
	}
	if !strings.HasPrefix(secret, prefix) || len(secret) < len(prefix)+32 {
		return Token{}, fmt.Errorf("token secret: want %s followed by at least 32 characters", prefix)
	}
	h := hash(secret)
	t := Token{ID: h[:12], Name: name, Role: role, Created: time.Now().UTC()}
	if _, err := s.kv.Create(ctx, h, s.encode(h, t)); err != nil {
		return Token{}, fmt.Errorf("store token: %w", err)
	}
	return t, nil
}

// Verify returns the token of a secret, or ErrInvalid: for an unknown or revoked token, and
// for a record the gateway did not write (unsigned, signed with another key, altered, copied
// under another key, or naming a role that does not exist).
func (s *Store) Verify(ctx context.Context, secret string) (Token, error) {
	if !strings.HasPrefix(secret, prefix) {
		return Token{}, ErrInvalid
	}
	return s.VerifyHash(ctx, hash(secret))
}

// VerifyHash is Verify for a caller that kept only the secret's hash (a console session):
// the same record checks apply, so revoking a token ends its sessions too.
func (s *Store) VerifyHash(ctx context.Context, h string) (Token, error) {
	if len(h) != sha256.Size*2 {
		return Token{}, ErrInvalid
	}
	e, err := s.kv.Get(ctx, h)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Token{}, ErrInvalid
		}
		return Token{}, fmt.Errorf("token lookup: %w", err)
	}
	t, ok := s.decode(h, e.Value())
	if !ok || t.Revoked {
		return Token{}, ErrInvalid
	}
	return t, nil
}

// List returns every token (without secrets). Records the gateway did not write are not
// tokens and are left out.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	var out []Token
	err := s.each(ctx, func(_ string, t Token, _ uint64) error { out = append(out, t); return nil })
	slices.SortFunc(out, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return out, err
}

// each calls f with every valid record, its key and revision.
func (s *Store) each(ctx context.Context, f func(key string, t Token, rev uint64) error) error {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return err
	}
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		if t, ok := s.decode(k, e.Value()); ok {
			if err := f(k, t, e.Revision()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Revoke marks the token with this ID, or every token with this name, revoked; they stop
// working at once. It returns the tokens it revoked (already revoked ones included, so
// revoking twice answers the same).
func (s *Store) Revoke(ctx context.Context, idOrName string) ([]Token, error) {
	var out []Token
	err := s.each(ctx, func(k string, t Token, rev uint64) error {
		if t.ID != idOrName && t.Name != idOrName {
			return nil
		}
		if !t.Revoked {
			t.Revoked = true
			if _, err := s.kv.Update(ctx, k, s.encode(k, t), rev); err != nil {
				return fmt.Errorf("revoke token %s: %w", t.ID, err)
			}
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return out, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no token with id or name %q; `outpost tokens ls` lists them", ErrNotFound, idOrName)
	}
	slices.SortFunc(out, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return out, nil
}
