package bridge

import (
	"context"
	"net"
	"strings"
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
	a.setSite([]string{"127.77.0.0/16"}, nil)
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
	b.setSite([]string{"127.77.0.0/16"}, nil)
	if !b.Allowed(net.ParseIP("127.77.200.1")) || b.Allowed(net.ParseIP("127.78.0.1")) {
		t.Fatal("site ranges not applied")
	}
}

// TestAllowListExcludesAndMetadata: the site's excludes and the link-local / metadata
// addresses are refused for every kind, before any dial (nothing here connects).
func TestAllowListExcludesAndMetadata(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name            string
		ranges, exclude []string
		target          string
		ok              bool
		why             string // part of the refusal
	}{
		{"excluded address", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.0.9", false, "excluded"},
		{"excluded, with port", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.0.9:22", false, "excluded"},
		{"excluded given as a bare address", []string{"127.0.0.0/8"}, []string{"127.0.0.9"}, "127.0.0.9", false, "excluded"},
		{"beside the exclude", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.0.10", true, ""},
		{"prefix holding an exclude", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.0.0/28", false, "excluded"},
		{"range holding an exclude", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.0.5-127.0.0.12", false, "excluded"},
		{"list with an excluded item", []string{"127.0.0.0/8"}, []string{"127.0.0.0/30"}, "127.0.0.5,127.0.0.2", false, "excluded"},
		{"prefix beside the exclude", []string{"127.0.0.0/8"}, []string{"127.0.0.9/32"}, "127.0.1.0/24", true, ""},
		{"metadata under 0.0.0.0/0", []string{"0.0.0.0/0"}, nil, "169.254.169.254", false, "metadata"},
		{"link-local under 169.0.0.0/8", []string{"169.0.0.0/8"}, nil, "169.254.10.1:80", false, "metadata"},
		{"link-local prefix under 0.0.0.0/0", []string{"0.0.0.0/0"}, nil, "169.254.0.0/24", false, ""},
		{"metadata named by the site", []string{"169.254.169.254/32"}, nil, "169.254.169.254", true, ""},
		{"link-local named by the site", []string{"169.254.0.0/16"}, nil, "169.254.10.1", true, ""},
		{"named range does not name its neighbour", []string{"169.254.169.254/32", "0.0.0.0/0"}, nil, "169.254.169.253", false, "metadata"},
		{"IPv6 link-local under ::/0", []string{"::/0"}, nil, "fe80::1", false, "metadata"},
		{"IPv6 metadata under fd00::/8", []string{"fd00::/8"}, nil, "fd00:ec2::254", false, "metadata"},
		{"IPv6 metadata named", []string{"fd00:ec2::254/128"}, nil, "fd00:ec2::254", true, ""},
		{"IPv6 beside the metadata", []string{"fd00::/8"}, nil, "fd00:ec2::253", true, ""},
		{"an exclude that does not parse refuses the site", []string{"127.0.0.0/8"}, []string{"127.0.0.x"}, "127.0.0.1", false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, err := newAllowList(nil)
			if err != nil {
				t.Fatal(err)
			}
			a.setSite(c.ranges, c.exclude)
			err = a.checkTarget(ctx, c.target)
			if (err == nil) != c.ok {
				t.Fatalf("%s: err=%v, want allowed=%v", c.target, err, c.ok)
			}
			if err != nil && c.why != "" && !strings.Contains(err.Error(), c.why) {
				t.Errorf("refusal %q does not say why (%q)", err, c.why)
			}
			if !c.ok && !strings.Contains(c.target, "/") && !strings.Contains(c.target, "-") && !strings.Contains(c.target, ",") {
				// the guarded dialer refuses it too, before any connection
				host := c.target
				if h, _, err := net.SplitHostPort(c.target); err == nil {
					host = h
				}
				if _, err := a.dialer()(ctx, "tcp", net.JoinHostPort(host, "80")); err == nil || !strings.Contains(err.Error(), "dial") {
					t.Errorf("dialer: %v, want a refusal", err)
				}
			}
		})
	}
}
