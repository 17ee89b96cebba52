// Package tokens keeps the gateway's API tokens: random bearer secrets stored only as their
// SHA-256 hash (they carry 256 bits of entropy, so a slow hash adds nothing) in the KV bucket
// "tokens", each with a name and a role.
package tokens

import (
	"context"
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

// Token is what is stored about a token: never the secret itself.
type Token struct {
	ID      string    `json:"id"` // first 12 hex chars of the hash: safe to show
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked,omitempty"`
}

// ErrInvalid is returned for a token that does not exist or was revoked.
var ErrInvalid = errors.New("invalid or revoked token")

// ErrNotFound: no token has that id or name.
var ErrNotFound = errors.New("no such token")

// Store is the token store over a KV bucket.
type Store struct{ kv jetstream.KeyValue }

// New returns the store on the bucket.
func New(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

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
	h := hash(secret)
	t := Token{ID: h[:12], Name: name, Role: role, Created: time.Now().UTC()}
	data, _ := json.Marshal(t)
	if _, err := s.kv.Create(ctx, h, data); err != nil {
		return "", Token{}, fmt.Errorf("store token: %w", err)
	}
	return secret, t, nil
}

// Verify returns the token of a secret, or ErrInvalid.
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
	var t Token
	if err := json.Unmarshal(e.Value(), &t); err != nil {
		return Token{}, fmt.Errorf("token record: %w", err)
	}
	if t.Revoked {
		return Token{}, ErrInvalid
	}
	return t, nil
}

// List returns every token (without secrets).
func (s *Store) List(ctx context.Context) ([]Token, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Token
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var t Token
		if json.Unmarshal(e.Value(), &t) == nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// Revoke marks the token with this ID (or name) revoked; it stops working at once.
func (s *Store) Revoke(ctx context.Context, idOrName string) (Token, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return Token{}, err
	}
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var t Token
		if json.Unmarshal(e.Value(), &t) != nil || (t.ID != idOrName && t.Name != idOrName) {
			continue
		}
		t.Revoked = true
		data, _ := json.Marshal(t)
		if _, err := s.kv.Update(ctx, k, data, e.Revision()); err != nil {
			return Token{}, fmt.Errorf("revoke: %w", err)
		}
		return t, nil
	}
	return Token{}, fmt.Errorf("%w: no token with id or name %q; `outpost tokens ls` lists them", ErrNotFound, idOrName)
}
