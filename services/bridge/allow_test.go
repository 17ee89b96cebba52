package bridge

import (
	"context"
	"net"
	"testing"
)

func TestAllowList(t *testing.T) {
	a, err := newAllowList([]string{"127.77.1.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Before the hub said anything, nothing is allowed.
	if a.Allowed(net.ParseIP("127.77.1.1")) {
		t.Fatal("allowed before the site's ranges are known")
	}
	a.setSite([]string{"127.77.0.0/16"})
	for _, c := range []struct {
		target string
		ok     bool
	}{
		{"127.77.1.1", true},
		{"127.77.1.1:22", true},
		{"127.77.2.1", false},    // in the site, outside the local narrowing
		{"10.0.0.1", false},      // outside both
		{"127.77.1.0/24", true},  // whole prefix inside
		{"127.77.1.0/23", false}, // half outside
		{"127.77.1.5-127.77.1.9", true},
		{"127.77.1.5-127.77.2.9", false},
		{"127.77.1.1,127.77.1.2", true},
		{"127.77.1.1,10.1.1.1", false},
		{"localhost", false}, // resolves to 127.0.0.1: outside
	} {
		err := a.checkTarget(ctx, c.target)
		if (err == nil) != c.ok {
			t.Errorf("%s: err=%v, want allowed=%v", c.target, err, c.ok)
		}
	}
	// The dialer refuses what the list refuses, whatever a probe kind asks.
	if _, err := a.dialer()(ctx, "tcp", "10.0.0.1:80"); err == nil {
		t.Fatal("dialed outside the allow-list")
	}
	// Without a local list, the site's ranges rule.
	b, _ := newAllowList(nil)
	b.setSite([]string{"127.77.0.0/16"})
	if !b.Allowed(net.ParseIP("127.77.200.1")) || b.Allowed(net.ParseIP("127.78.0.1")) {
		t.Fatal("site ranges not applied")
	}
}
