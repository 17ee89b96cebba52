package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/services/gateway/console"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// sessions keeps console sign-ins server-side, in the KV bucket "sessions" so every gateway
// replica sees the same ones and signing out on one ends the session on all. The browser
// holds only a random id; the bucket holds the id's hash (reading the bucket gives no
// usable cookie) and the token's hash (never the token). The role is not copied: each
// request looks the token up, so a revoked or changed token takes effect at once.
type sessions struct {
	kv  jetstream.KeyValue
	ttl time.Duration
	now func() time.Time
}

type sessionRecord struct {
	TokenHash string    `json:"token_hash"`
	Created   time.Time `json:"created"`
}

var _ console.Sessions = (*sessions)(nil)

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// Open starts a session for a token the caller has verified.
func (s *sessions) Open(ctx context.Context, token string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	id := base64.RawURLEncoding.EncodeToString(b)
	rec, _ := json.Marshal(sessionRecord{TokenHash: tokens.Hash(token), Created: s.now().UTC()})
	if _, err := s.kv.Create(ctx, sessionKey(id), rec); err != nil {
		return "", fmt.Errorf("store the session: %w", err)
	}
	return id, nil
}

// Resume returns the token hash of a live session, or console.ErrNoSession.
func (s *sessions) Resume(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", console.ErrNoSession
	}
	e, err := s.kv.Get(ctx, sessionKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", console.ErrNoSession
	}
	if err != nil {
		return "", fmt.Errorf("session lookup: %w", err)
	}
	var rec sessionRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.TokenHash == "" {
		return "", console.ErrNoSession
	}
	// The bucket's TTL removes old sessions; this also holds when its clock and ours differ.
	if s.now().Sub(rec.Created) >= s.ttl {
		return "", console.ErrNoSession
	}
	return rec.TokenHash, nil
}

// Close ends a session (signing out): its cookie is useless afterwards.
func (s *sessions) Close(ctx context.Context, id string) error {
	if id == "" {
		return nil
	}
	if err := s.kv.Purge(ctx, sessionKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("end the session: %w", err)
	}
	return nil
}

// TTL is how long a session lasts.
func (s *sessions) TTL() time.Duration { return s.ttl }
