package agents

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
)

// Enrollment tokens are bearer secrets: whoever holds one may enroll a bridge into its site.
// So they expire (24 h unless told), may be limited to a number of enrollments, can be
// revoked, and only their SHA-256 hash is stored (key token.<hash> of KV sites). A token is
// spent by an enrollment that creates an agent; a known key re-registering spends nothing.

// DefaultTokenTTL is how long an enrollment token lives when no TTL is given.
const DefaultTokenTTL = 24 * time.Hour

// MaxTokenTTL bounds a token's lifetime: a forgotten token should not outlive a year.
const MaxTokenTTL = 365 * 24 * time.Hour

// EnrollToken is what is kept of an enrollment token (never the secret); TokenView is a
// token as `site tokens ls` shows it. Both are the contract's (libs/api/agents).
type (
	EnrollToken = agentsapi.EnrollToken
	TokenView   = agentsapi.TokenView
)

// Token states, as listed.
const (
	TokenActive  = agentsapi.TokenActive
	TokenExpired = agentsapi.TokenExpired
	TokenUsedUp  = agentsapi.TokenUsedUp
	TokenRevoked = agentsapi.TokenRevoked
)

// usable is nil for a token that enrolls bridges now, else why it does not.
func usable(t EnrollToken, now time.Time) error {
	switch t.State(now) {
	case TokenRevoked:
		return bus.Errorf(http.StatusForbidden, "enrollment token %s of site %s was revoked: ask an admin for a new one (`outpost site tokens add %s`)", t.ID, t.Site, t.Site)
	case TokenExpired:
		if t.Expires.IsZero() {
			return bus.Errorf(http.StatusForbidden, "enrollment token %s of site %s was made before tokens expired and is no longer accepted: ask an admin for a new one (`outpost site tokens add %s`)", t.ID, t.Site, t.Site)
		}
		return bus.Errorf(http.StatusForbidden, "enrollment token %s of site %s expired at %s: ask an admin for a new one (`outpost site tokens add %s`)", t.ID, t.Site, t.Expires.Format(time.RFC3339), t.Site)
	case TokenUsedUp:
		return bus.Errorf(http.StatusForbidden, "enrollment token %s of site %s has enrolled its %d bridge(s): ask an admin for a new one (`outpost site tokens add %s`)", t.ID, t.Site, t.MaxUses, t.Site)
	}
	return nil
}

func (r *Registry) view(t EnrollToken) TokenView {
	v := TokenView{EnrollToken: t, State: t.State(r.now())}
	if t.MaxUses > 0 {
		left := max(0, t.MaxUses-t.Used)
		v.UsesLeft = &left
	}
	return v
}

// TokenOptions say what a new enrollment token allows.
type TokenOptions struct {
	TTL         time.Duration // 0: DefaultTokenTTL
	Uses        int           // 0: any number of enrollments until it expires
	AutoApprove bool
}

// ParseTokenOptions reads a TTL such as "24h" ("" for the default) and a use limit, and
// reports every problem at once.
func ParseTokenOptions(ttl string, uses int, autoApprove bool) (TokenOptions, error) {
	o := TokenOptions{Uses: uses, AutoApprove: autoApprove}
	var errs []error
	if ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("token ttl %q: want a duration such as 24h or 30m, more than 0", ttl))
		} else {
			o.TTL = d
		}
	}
	return o, errors.Join(append(errs, o.Validate())...)
}

// Validate reports every problem at once.
func (o TokenOptions) Validate() error {
	var errs []error
	if o.TTL < 0 || o.TTL > MaxTokenTTL {
		errs = append(errs, fmt.Errorf("token ttl %s: want more than 0 and at most %s (default %s)", o.TTL, MaxTokenTTL, DefaultTokenTTL))
	}
	if o.Uses < 0 {
		errs = append(errs, fmt.Errorf("token uses %d: want 0 (any number until it expires) or more", o.Uses))
	}
	return errors.Join(errs...)
}

// NewToken makes an enrollment token for a site and returns its secret, shown once.
func (r *Registry) NewToken(ctx context.Context, site string, o TokenOptions) (string, TokenView, error) {
	if err := o.Validate(); err != nil {
		return "", TokenView{}, bus.Errorf(http.StatusBadRequest, "%v", err)
	}
	if _, err := r.Site(ctx, site); err != nil {
		if errors.Is(err, errNotFound) {
			return "", TokenView{}, bus.Errorf(http.StatusNotFound, "site %s does not exist: create it with `outpost site add %s --range CIDR`", site, site)
		}
		return "", TokenView{}, err
	}
	if o.TTL == 0 {
		o.TTL = DefaultTokenTTL
	}
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", TokenView{}, err
	}
	secret := "ope_" + site + "_" + base64.RawURLEncoding.EncodeToString(buf)
	h := hashToken(secret)
	now := r.now().UTC()
	t := EnrollToken{ID: h[:12], Site: site, AutoApprove: o.AutoApprove, Created: now, Expires: now.Add(o.TTL), MaxUses: o.Uses}
	b, err := json.Marshal(t)
	if err != nil {
		return "", TokenView{}, err
	}
	if _, err := r.sites.Create(ctx, tokenKey(h), b); err != nil {
		return "", TokenView{}, fmt.Errorf("store enrollment token: %w", err)
	}
	return secret, r.view(t), nil
}

func tokenKey(hash string) string { return "token." + hash }

// lookupToken returns the record of a secret and its revision, whatever its state.
func (r *Registry) lookupToken(ctx context.Context, secret string) (EnrollToken, uint64, error) {
	if secret == "" {
		return EnrollToken{}, 0, errNotFound
	}
	h := hashToken(secret)
	t, rev, err := getJSON[EnrollToken](ctx, r.sites, tokenKey(h))
	if err == nil && t.ID == "" {
		t.ID = h[:12] // made before tokens had IDs
	}
	return t, rev, err
}

// token returns the token of a secret if it enrolls bridges now: errNotFound for an
// unknown one, a 403 saying why for an expired, used-up or revoked one. The auth callout
// lets an unknown identity connect (to enroll, nothing else) only with such a token.
func (r *Registry) token(ctx context.Context, secret string) (EnrollToken, error) {
	t, _, err := r.lookupToken(ctx, secret)
	if err != nil {
		return EnrollToken{}, err
	}
	if err := usable(t, r.now()); err != nil {
		return EnrollToken{}, err
	}
	return t, nil
}

// useToken spends one enrollment of the token for site (compare-and-set on its revision,
// so a token for one bridge enrolls one bridge even when two race).
func (r *Registry) useToken(ctx context.Context, secret, site string) (EnrollToken, error) {
	for range 5 {
		t, rev, err := r.lookupToken(ctx, secret)
		if errors.Is(err, errNotFound) {
			return EnrollToken{}, bus.Errorf(http.StatusForbidden, "enrollment needs a valid token of site %s: an admin makes one with `outpost site tokens add %s`", site, site)
		}
		if err != nil {
			return EnrollToken{}, err
		}
		if t.Site != site {
			return EnrollToken{}, bus.Errorf(http.StatusForbidden, "the token was made for site %s, not %s", t.Site, site)
		}
		if err := usable(t, r.now()); err != nil {
			return EnrollToken{}, err
		}
		t.Used++
		b, err := json.Marshal(t)
		if err != nil {
			return EnrollToken{}, err
		}
		if _, err := r.sites.Update(ctx, tokenKey(hashToken(secret)), b, rev); err == nil {
			return t, nil
		}
	}
	return EnrollToken{}, bus.Errorf(http.StatusConflict, "enrollment token of site %s changed concurrently; try again", site)
}

// Tokens lists the enrollment tokens of a site ("" for every site), oldest first.
func (r *Registry) Tokens(ctx context.Context, site string) ([]TokenView, error) {
	keys, err := r.sites.ListKeys(ctx, jetstream.MetaOnly())
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var out []TokenView
	for k := range keys.Keys() {
		h, ok := strings.CutPrefix(k, "token.")
		if !ok {
			continue
		}
		t, _, err := getJSON[EnrollToken](ctx, r.sites, k)
		if err != nil || (site != "" && t.Site != site) {
			continue
		}
		if t.ID == "" && len(h) >= 12 {
			t.ID = h[:12]
		}
		out = append(out, r.view(t))
	}
	slices.SortFunc(out, func(a, b TokenView) int { return strings.Compare(tokenOrder(a), tokenOrder(b)) })
	return out, nil
}

// tokenOrder is the key tokens are listed and paged by: creation time, then ID.
func tokenOrder(t TokenView) string { return t.Created.UTC().Format(time.RFC3339Nano) + "|" + t.ID }

// RevokeToken revokes the enrollment token with this ID: it enrolls nothing from now on.
// Bridges it already enrolled keep their identity (revoke those with `agents revoke`).
func (r *Registry) RevokeToken(ctx context.Context, id string) (TokenView, error) {
	if len(id) != 12 {
		return TokenView{}, bus.Errorf(http.StatusBadRequest, "token id %q: want the 12-character ID `outpost site tokens ls` shows", id)
	}
	for range 5 {
		keys, err := r.sites.ListKeys(ctx, jetstream.MetaOnly())
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return TokenView{}, err
		}
		key := ""
		if err == nil {
			for k := range keys.Keys() {
				if strings.HasPrefix(k, "token."+id) {
					key = k
				}
			}
		}
		if key == "" {
			return TokenView{}, bus.Errorf(http.StatusNotFound, "no enrollment token with id %s; `outpost site tokens ls` lists them", id)
		}
		t, rev, err := getJSON[EnrollToken](ctx, r.sites, key)
		if err != nil {
			return TokenView{}, err
		}
		t.ID = id
		if !t.Revoked.IsZero() {
			return r.view(t), nil
		}
		t.Revoked = r.now().UTC()
		b, err := json.Marshal(t)
		if err != nil {
			return TokenView{}, err
		}
		if _, err := r.sites.Update(ctx, key, b, rev); err == nil {
			return r.view(t), nil
		}
	}
	return TokenView{}, bus.Errorf(http.StatusConflict, "enrollment token %s changed concurrently; try again", id)
}
