// Package target turns a probe's target into an address the site allows, and dials only
// such addresses.
package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// Endpoint is a resolved target.
type Endpoint struct {
	Name string     // what the probe named (an IP or a host name), for TLS server names
	IP   netip.Addr // the allowed address that is dialled
	Port int
}

// Addr is "ip:port".
func (e Endpoint) Addr() string { return netip.AddrPortFrom(e.IP, uint16(e.Port)).String() }

// IsName reports whether the target was a host name rather than an address.
func (e Endpoint) IsName() bool {
	_, err := netip.ParseAddr(e.Name)
	return err != nil
}

// Split separates "host:port", "[v6]:port", "v6", "host" into host and port (0 when absent).
func Split(t string) (string, int, error) {
	t = strings.TrimSpace(t)
	if t == "" {
		return "", 0, probe.Errorf(probe.CodeBadParams, "target: empty (want an IP address or host name)")
	}
	if a, err := netip.ParseAddr(strings.Trim(t, "[]")); err == nil {
		return a.String(), 0, nil
	}
	if h, p, err := net.SplitHostPort(t); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, probe.Errorf(probe.CodeBadParams, "target %q: %q is not a port", t, p)
		}
		return strings.Trim(h, "[]"), n, nil
	}
	if strings.ContainsAny(t, " /,") {
		return "", 0, probe.Errorf(probe.CodeBadParams, "target %q: want one IP address or host name", t)
	}
	return t, 0, nil
}

// Resolve resolves the probe target (IP or name, optionally with a port that overrides
// defPort) to an allowed address. Nothing is dialled. A name resolving only to addresses
// outside the allow-list is denied.
func Resolve(ctx context.Context, set probe.Settings, t string, defPort int) (Endpoint, error) {
	host, port, err := Split(t)
	if err != nil {
		return Endpoint{}, err
	}
	if port == 0 {
		port = defPort
	}
	ep := Endpoint{Name: host, Port: port}
	if a, err := netip.ParseAddr(host); err == nil {
		ep.IP = a.Unmap()
		if !Allowed(set, ep.IP) {
			return Endpoint{}, Denied(ep.IP)
		}
		return ep, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		if ctx.Err() != nil {
			return Endpoint{}, ctx.Err()
		}
		return Endpoint{}, probe.Errorf(probe.CodeUnreachable, "target %q does not resolve: %v", host, err)
	}
	for _, a := range addrs {
		if Allowed(set, a.Unmap()) {
			ep.IP = a.Unmap()
			return ep, nil
		}
	}
	return Endpoint{}, probe.Errorf(probe.CodeDenied, "target %q resolves to %v, outside the site's allowed ranges", host, addrs)
}

// Allowed applies the site's allow-list; without one nothing is allowed.
func Allowed(set probe.Settings, a netip.Addr) bool {
	if set.Allowed == nil {
		return false
	}
	return set.Allowed(net.IP(a.Unmap().AsSlice()))
}

// Denied is the error for an address outside the allow-list.
func Denied(a netip.Addr) *probe.Error {
	return probe.Errorf(probe.CodeDenied, "target %s is outside the site's allowed ranges", a)
}

// Dialer returns the settings' Dial (or a plain net.Dialer) guarded by the allow-list, so a
// redirect or a driver's own idea of where to connect cannot leave the site's ranges.
func Dialer(set probe.Settings) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := set.Dial
	if dial == nil {
		d := &net.Dialer{KeepAlive: -1}
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			// a name (an HTTP redirect, a driver): resolve here and dial the allowed address
			addrs, rerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if rerr != nil {
				return nil, rerr
			}
			_, port, _ := net.SplitHostPort(addr)
			for _, x := range addrs {
				if Allowed(set, x.Unmap()) {
					return dial(ctx, network, net.JoinHostPort(x.Unmap().String(), port))
				}
			}
			return nil, probe.Errorf(probe.CodeDenied, "%s resolves outside the site's allowed ranges", host)
		}
		if !Allowed(set, a.Unmap()) {
			return nil, Denied(a.Unmap())
		}
		return dial(ctx, network, addr)
	}
}

// DialError classifies a connection failure: refused/unreachable, timeout, cancellation,
// or a denial from the allow-list.
func DialError(ctx context.Context, what string, err error) error {
	var pe *probe.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, syscall.ECONNREFUSED):
		return probe.Errorf(probe.CodeUnreachable, "%s: connection refused", what)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return probe.Errorf(probe.CodeUnreachable, "%s: no route to host", what)
	case isTimeout(err):
		return probe.Errorf(probe.CodeTimeout, "%s: no answer in time", what)
	}
	return probe.Errorf(probe.CodeUnreachable, "%s: %v", what, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// IsTimeout reports whether err is a network or context timeout.
func IsTimeout(err error) bool { return isTimeout(err) }
