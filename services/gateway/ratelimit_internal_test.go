package gateway

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// The limiter's table stays bounded: refilled addresses are forgotten first, then the
// longest unseen, and an IPv6 host counts once per /64.
func TestFailLimiterIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newFailLimiter(2, time.Hour, func() time.Time { return now })
	l.max = 100
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 0, byte(i >> 8), byte(i)}), 32)
	}
	for i := range 100 {
		l.failed(addr(i))
		now = now.Add(time.Second)
	}
	if l.size() != 100 {
		t.Fatalf("%d entries, want 100", l.size())
	}
	// Full: a new address evicts the longest unseen (the first), nothing else.
	l.failed(addr(1000))
	if l.size() != 100 {
		t.Fatalf("%d entries after one more, want 100", l.size())
	}
	if _, ok := l.addrs[addr(0)]; ok {
		t.Fatal("the longest unseen address was kept")
	}
	// Two hours on, every bucket has refilled: the next insert at the cap clears them all.
	now = now.Add(2 * time.Hour)
	l.failed(addr(2000))
	if l.size() > 100 || l.size() == 0 {
		t.Fatalf("%d entries", l.size())
	}
	for i := 1; i < 100; i++ {
		if _, ok := l.addrs[addr(i)]; ok {
			t.Fatalf("refilled address %d kept", i)
		}
	}
	// Many addresses of one IPv6 /64 are one client.
	for i := range 50 {
		r := &http.Request{RemoteAddr: fmt.Sprintf("[fd00:1:2:3::%x]:443", i+1)}
		l.failed(clientKey(r))
	}
	r := &http.Request{RemoteAddr: "[fd00:1:2:3::ffff]:1"}
	if ok, wait := l.allow(clientKey(r), "x"); ok || wait <= 0 {
		t.Fatalf("rotating through a /64 escaped the limit: %v %v", ok, wait)
	}
	v4 := &http.Request{RemoteAddr: "127.0.0.9:5000"}
	mapped := &http.Request{RemoteAddr: "[::ffff:127.0.0.9]:5000"}
	if clientKey(v4) != clientKey(mapped) {
		t.Fatalf("v4 and v4-mapped differ: %v %v", clientKey(v4), clientKey(mapped))
	}
}
