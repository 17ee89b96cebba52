package lab

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"golang.org/x/crypto/ssh"
)

// MaxHosts bounds a lab's size: every host costs a few sockets and the
// process's open-file limit is usually 1,024 to 65,536.
const MaxHosts = 4096

// HostileHosts is how many hostile hosts Hostile adds after the simulated ones.
const HostileHosts = 3

// loopback is the only network the lab ever binds to.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// Config describes a lab. The zero value is not valid; start from DefaultConfig.
type Config struct {
	// Range is the CIDR the lab lives in. It must lie inside 127.0.0.0/8
	// (the project uses 127.77.0.0/16). Hosts take the range's addresses in
	// order from its first address after the network address.
	Range string
	// Hosts is how many addresses the lab simulates (about 15% of them dead).
	Hosts int
	// Stride spreads the hosts over the range: host i takes address 1 + i*Stride (0 or 1:
	// consecutive). A few hundred hosts with a large stride make a sparse /16, the shape
	// of a real site's discovery range, without a socket per address.
	Stride int
	// Seed determines everything the lab simulates: same seed, same range,
	// same day → byte-identical manifest.
	Seed int64
	// Hostile adds HostileHosts misbehaving hosts right after the simulated
	// ones (stall, wrong protocol, endless stream); the simulated hosts do not
	// change.
	Hostile bool
	// AuthorizedKeys are public keys every linux_server also accepts for its
	// SSH user (the password from the manifest always works).
	AuthorizedKeys []ssh.PublicKey
	// Logger receives connection-level debug logs and startup info; nil discards.
	Logger *slog.Logger
	// Now is the clock; certificates' validity is relative to the UTC midnight
	// of Now() at start (Manifest.ReferenceTime). Nil means time.Now.
	Now func() time.Time
}

// DefaultConfig is the lab `outpost lab` runs without flags.
func DefaultConfig() Config {
	return Config{Range: "127.77.0.0/24", Hosts: 60, Seed: 7}
}

// Validate reports every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	p, err := netip.ParsePrefix(c.Range)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("range %q: not a CIDR (want e.g. 127.77.0.0/24): %w", c.Range, err))
	case !p.Addr().Is4():
		errs = append(errs, fmt.Errorf("range %q: the lab only simulates IPv4 loopback addresses in 127.0.0.0/8", c.Range))
	case p.Bits() < loopback.Bits() || !loopback.Contains(p.Addr()):
		errs = append(errs, fmt.Errorf("range %q: outside 127.0.0.0/8; the lab never binds anything but loopback addresses (use 127.77.x.0/24)", c.Range))
	}
	if c.Stride < 0 {
		errs = append(errs, fmt.Errorf("stride %d: want 0 or more (0 and 1: consecutive addresses)", c.Stride))
	}
	if c.Hosts < 1 {
		errs = append(errs, fmt.Errorf("hosts %d: want at least 1", c.Hosts))
	}
	if c.Hosts > MaxHosts {
		errs = append(errs, fmt.Errorf("hosts %d: at most %d hosts per lab (each costs several sockets)", c.Hosts, MaxHosts))
	}
	if err == nil && p.Addr().Is4() && loopback.Contains(p.Addr()) && p.Bits() >= loopback.Bits() && c.Hosts >= 1 {
		need := c.Hosts
		if c.Hostile {
			need += HostileHosts
		}
		need = (need-1)*c.stride() + 1
		// the network and broadcast addresses are never used
		if avail := (1 << (32 - p.Bits())) - 2; need > avail {
			errs = append(errs, fmt.Errorf("range %q has %d usable addresses, the lab needs %d (hosts %d%s): use a larger range",
				c.Range, max(avail, 0), need, c.Hosts, map[bool]string{true: " + 3 hostile", false: ""}[c.Hostile]))
		}
	}
	for i, k := range c.AuthorizedKeys {
		if k == nil {
			errs = append(errs, fmt.Errorf("authorized key %d is nil", i))
		}
	}
	return errors.Join(errs...)
}

// stride is Stride with its default.
func (c Config) stride() int { return max(c.Stride, 1) }

func (c Config) prefix() netip.Prefix {
	return netip.MustParsePrefix(c.Range).Masked()
}
