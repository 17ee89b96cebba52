package gateway_test

import (
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/services/gateway"
)

// fakeClock is the limiter's clock in tests: it moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Failed authentication is limited per client address: a burst of wrong tokens, then 429
// with Retry-After until the bucket earns an attempt back; requests without a token and
// requests with a token that works are never limited.
func TestFailedAuthIsRateLimited(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	e := newEnvWith(t, true, func(c *gateway.Config, d *gateway.Deps) {
		c.AuthFailBurst, c.AuthFailRefill = 3, 10*time.Second
		d.Now = clock.Now
	})
	// The admin token works from this address before anyone fails here.
	if resp, body := e.get(t, "/api/v1/status", e.admin); resp.StatusCode != 200 {
		t.Fatalf("admin before: %d %s", resp.StatusCode, body)
	}
	for i := range 3 {
		if resp, _ := e.get(t, "/api/v1/status", "opt_wrong"+strconv.Itoa(i)); resp.StatusCode != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	resp, body := e.get(t, "/api/v1/status", "opt_wrong")
	if resp.StatusCode != 429 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("4th failure: %d %s, want 429 problem+json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var p gateway.Problem
	if err := json.Unmarshal(body, &p); err != nil || p.Type != "https://outpost.dev/problems/rate-limited" || p.Status != 429 {
		t.Fatalf("problem: %s", body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "10" {
		t.Fatalf("Retry-After %q, want 10", ra)
	}
	// A locked-out address does not learn whether a guess is right: an unknown token that
	// is valid is refused like the rest...
	viewer, _, err := e.toks.Create(t.Context(), "late", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	if resp, _ := e.get(t, "/api/v1/status", viewer); resp.StatusCode != 429 {
		t.Fatalf("token never used from here, while locked: %d, want 429", resp.StatusCode)
	}
	// ...but a token that already succeeded from it keeps working: successes are not limited.
	for range 5 {
		if resp, body := e.get(t, "/api/v1/status", e.admin); resp.StatusCode != 200 {
			t.Fatalf("admin while locked: %d %s", resp.StatusCode, body)
		}
	}
	// No token is not a failed guess.
	if resp, _ := e.get(t, "/api/v1/status", ""); resp.StatusCode != 401 {
		t.Fatalf("no token while locked: %d, want 401", resp.StatusCode)
	}
	// Retry-After counts down with the clock; one attempt is earned per refill period.
	clock.Add(4 * time.Second)
	if resp, _ := e.get(t, "/api/v1/status", "opt_wrong"); resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "6" {
		t.Fatalf("after 4 s: %d Retry-After %q, want 429 and 6", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	clock.Add(6 * time.Second)
	if resp, _ := e.get(t, "/api/v1/status", "opt_wrong"); resp.StatusCode != 401 {
		t.Fatalf("after a refill: %d, want 401 (one attempt earned)", resp.StatusCode)
	}
	if resp, _ := e.get(t, "/api/v1/status", "opt_wrong"); resp.StatusCode != 429 {
		t.Fatalf("the earned attempt spent: %d, want 429", resp.StatusCode)
	}
	clock.Add(10 * time.Second)
	if resp, _ := e.get(t, "/api/v1/status", viewer); resp.StatusCode != 200 {
		t.Fatalf("valid token after a refill: %d", resp.StatusCode)
	}
}
