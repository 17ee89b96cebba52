package gateway

import (
	"crypto/sha256"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Failed authentication is limited per client address with a token bucket: each address may
// fail AuthFailBurst times at once, and earns one more attempt every AuthFailRefill
// (defaults: 10, then one every 6 s — 600 guesses an hour, against bearer secrets of 256
// bits). Only a presented-but-wrong token counts: a request without a token is a client
// that has not logged in yet, not a guess.
//
// While an address is out of attempts every request from it that carries a token is
// answered 429 before the token is looked up — otherwise the answer (200 or 429) would tell
// a guesser which guess was right. The exception is a token that already succeeded from that
// address: its holder shares the address with whoever is failing (a NAT, a CI runner, the
// loopback of a laptop) and keeps working. So successful requests are never limited.
//
// Memory is bounded: an address whose bucket has refilled is the same as no entry and is
// dropped; the table holds at most authLimitMaxEntries addresses (IPv6 counted per /64, what
// one host can rotate through), evicting the longest idle when full.
const (
	defaultAuthFailBurst  = 10
	defaultAuthFailRefill = 6 * time.Second
	authLimitMaxEntries   = 10_000
	authLimitKnownTokens  = 8 // tokens remembered per address as having succeeded there
)

type failBucket struct {
	tokens float64   // attempts left
	last   time.Time // when tokens was computed
	seen   time.Time // last failure or success: eviction drops the longest unseen
	known  [][32]byte
}

type failLimiter struct {
	burst  float64
	refill time.Duration
	max    int
	now    func() time.Time

	mu    sync.Mutex
	addrs map[netip.Prefix]*failBucket
}

func newFailLimiter(burst int, refill time.Duration, now func() time.Time) *failLimiter {
	if burst <= 0 {
		burst = defaultAuthFailBurst
	}
	if refill <= 0 {
		refill = defaultAuthFailRefill
	}
	if now == nil {
		now = time.Now
	}
	return &failLimiter{burst: float64(burst), refill: refill, max: authLimitMaxEntries, now: now, addrs: map[netip.Prefix]*failBucket{}}
}

// clientKey is the address a request comes from: the TCP peer, never a header a client can
// write (behind a proxy every client shares the proxy's address; see docs).
func clientKey(r *http.Request) netip.Prefix {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Prefix{}
	}
	ip = ip.Unmap()
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, _ := ip.Prefix(bits)
	return p
}

func fingerprint(secret string) [32]byte { return sha256.Sum256([]byte(secret)) }

// level brings a bucket up to now; the caller holds mu.
func (l *failLimiter) level(b *failBucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(l.burst, b.tokens+float64(d)/float64(l.refill))
	}
	b.last = now
}

// allow says whether a request from addr presenting secret may be verified, and if not, how
// long until the next attempt is earned.
func (l *failLimiter) allow(addr netip.Prefix, secret string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.addrs[addr]
	if !ok {
		return true, 0
	}
	now := l.now()
	l.level(b, now)
	if b.tokens >= 1 || slices.Contains(b.known, fingerprint(secret)) {
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) * float64(l.refill))
	return false, wait
}

// failed takes one attempt from addr.
func (l *failLimiter) failed(addr netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.addrs[addr]
	if !ok {
		b = l.add(addr, now)
	}
	l.level(b, now)
	b.tokens = math.Max(0, b.tokens-1)
	b.seen = now
}

// add starts watching addr; the caller holds mu.
func (l *failLimiter) add(addr netip.Prefix, now time.Time) *failBucket {
	if len(l.addrs) >= l.max {
		l.evict(now)
	}
	b := &failBucket{tokens: l.burst, last: now, seen: now}
	l.addrs[addr] = b
	return b
}

// succeeded remembers that secret works from addr, so a lock-out caused by someone else
// failing from the same address does not stop its holder.
func (l *failLimiter) succeeded(addr netip.Prefix, secret string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.addrs[addr]
	if !ok {
		b = l.add(addr, now)
	}
	b.seen = now
	fp := fingerprint(secret)
	if slices.Contains(b.known, fp) {
		return
	}
	if len(b.known) >= authLimitKnownTokens {
		b.known = b.known[1:]
	}
	b.known = append(b.known, fp)
}

// evict drops every address whose bucket has refilled (holders of a known token on such an
// address are not locked out, so forgetting them loses nothing), and if the table is still
// full the longest unseen; the caller holds mu.
func (l *failLimiter) evict(now time.Time) {
	var oldest netip.Prefix
	var oldestAt time.Time
	for k, b := range l.addrs {
		l.level(b, now)
		if b.tokens >= l.burst {
			delete(l.addrs, k)
			continue
		}
		if oldestAt.IsZero() || b.seen.Before(oldestAt) {
			oldest, oldestAt = k, b.seen
		}
	}
	if len(l.addrs) >= l.max {
		delete(l.addrs, oldest)
	}
}

// size is the number of addresses tracked (tests).
func (l *failLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.addrs)
}
