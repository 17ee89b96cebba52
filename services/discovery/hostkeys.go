package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// KVHostKeys is the hub's known-hosts table: the SSH host key first seen at each address of
// each site (trust on first use). Every ssh_exec probe to a known address carries the key
// (params.known_host_key), so a bridge refuses a host presenting another one before any
// password leaves it.
const KVHostKeys = "discovery_host_keys"

// HostKey is one known host key.
type HostKey = discoveryapi.HostKey

// hostKeyKey is the record of (site, address): addresses may repeat across sites.
func hostKeyKey(site, addr string) string {
	return site + "." + strings.NewReplacer(".", "_", ":", "_").Replace(addr)
}

// knownHostKey returns the recorded key of an address ("" when none).
func (s *service) knownHostKey(ctx context.Context, site, addr string) (string, error) {
	e, err := s.kvHostKeys.Get(ctx, hostKeyKey(site, addr))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var hk HostKey
	if err := json.Unmarshal(e.Value(), &hk); err != nil {
		return "", fmt.Errorf("host key of %s: %w", addr, err)
	}
	return hk.Fingerprint, nil
}

// seeHostKey records the key an ssh_exec probe saw: the first time, as the key of that
// address (first is true); afterwards it only refreshes LastSeen when it is the same key.
// A different key is not recorded: changed holds the one on record.
func (s *service) seeHostKey(ctx context.Context, site, addr, fp, typ, run string) (first bool, changed string, err error) {
	key := hostKeyKey(site, addr)
	now := s.now().UTC()
	for range 3 {
		e, err := s.kvHostKeys.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			b, _ := json.Marshal(HostKey{Site: site, Address: addr, Fingerprint: fp, Type: typ, FirstSeen: now, LastSeen: now, Run: run})
			if _, err := s.kvHostKeys.Create(ctx, key, b); err == nil {
				return true, "", nil
			}
			continue // another probe recorded it first: compare with that one
		}
		if err != nil {
			return false, "", err
		}
		var hk HostKey
		if err := json.Unmarshal(e.Value(), &hk); err != nil {
			return false, "", fmt.Errorf("host key of %s: %w", addr, err)
		}
		if hk.Fingerprint != fp {
			return false, hk.Fingerprint, nil
		}
		hk.LastSeen = now
		b, _ := json.Marshal(hk)
		if _, err := s.kvHostKeys.Update(ctx, key, b, e.Revision()); err == nil {
			return false, "", nil
		}
	}
	return false, "", fmt.Errorf("host key of %s: the record kept changing", addr)
}

// hostKeyChanged tells whoever watches events that a host presented another key than the
// one recorded: a rebuilt host, or someone answering in its place.
func (s *service) hostKeyChanged(ctx context.Context, site, addr, known, seen, run, message string) {
	ev := &envelope.Event{ID: envelope.NewID(), Site: site, Source: Service, Type: "ssh_host_key_changed", Node: addr,
		Resource: "ssh", Severity: "critical", MessageKey: "ssh_host_key_changed:" + site + ":" + addr, Message: message, Time: s.now().UTC(),
		Fields: map[string]string{"address": addr, "known": known, "seen": seen, "run": run}}
	if _, err := s.pub.Publish(ctx, bus.EventSubject("hub", Service), envelope.Meta{ID: ev.ID, Run: run}, ev); err != nil {
		s.log.Error("ssh host key change event not published", "address", addr, "err", err)
	}
	s.log.Warn("ssh host key changed", "site", site, "address", addr, "known", known, "seen", seen)
}

// HostKeysRequest is svc.discovery.hostkeys_forget (and the filter of hostkeys_ls).
type HostKeysRequest = discoveryapi.HostKeysRequest

func (s *service) listHostKeys(ctx context.Context) ([]HostKey, error) {
	keys, err := s.kvHostKeys.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := []HostKey{}
	for k := range keys.Keys() {
		e, err := s.kvHostKeys.Get(ctx, k)
		if err != nil {
			continue
		}
		var hk HostKey
		if json.Unmarshal(e.Value(), &hk) == nil {
			out = append(out, hk)
		}
	}
	slices.SortFunc(out, func(a, b HostKey) int {
		return strings.Compare(hostKeyKey(a.Site, a.Address), hostKeyKey(b.Site, b.Address))
	})
	return out, nil
}

// forgetHostKey drops the record of an address, so the next probe trusts what it sees.
// With no site, the address is forgotten in every site that knows it.
func (s *service) forgetHostKey(ctx context.Context, r HostKeysRequest) ([]HostKey, error) {
	addr, err := netip.ParseAddr(r.Address)
	if err != nil {
		return nil, bus.Errorf(400, "address %q: not an IP address", r.Address)
	}
	all, err := s.listHostKeys(ctx)
	if err != nil {
		return nil, err
	}
	var gone []HostKey
	for _, hk := range all {
		if hk.Address == addr.String() && (r.Site == "" || hk.Site == r.Site) {
			if err := s.kvHostKeys.Delete(ctx, hostKeyKey(hk.Site, hk.Address)); err != nil {
				return gone, err
			}
			gone = append(gone, hk)
		}
	}
	if len(gone) == 0 {
		return nil, bus.Errorf(404, "no known SSH host key for %s (`outpost hostkeys ls`)", r.Address)
	}
	return gone, nil
}
