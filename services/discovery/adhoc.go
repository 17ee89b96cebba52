package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/seal"
)

// SealRequest is svc.discovery.credentials_seal: the agents service asks for stored
// credentials, by name, sealed to a site's bridges for one ad-hoc probe; SealReply carries
// them (libs/api/discovery).
type (
	SealRequest = discoveryapi.SealRequest
	SealReply   = discoveryapi.SealReply
)

func (s *service) sealForProbe(ctx context.Context, r SealRequest) (SealReply, error) {
	// which stored types a probe kind can use (its contract, libs/probes/catalog):
	// http_request takes only http credentials, so no operator can have an SSH, SNMP, SQL
	// or LDAP secret sent as an Authorization header to a server of their choosing and read
	// it back. The bridge checks the same table (a hub that sends anything else gets the
	// probe denied).
	types := catalog.CredentialTypes(r.Kind)
	if len(types) == 0 {
		return SealReply{}, bus.Errorf(400, "kind %q takes no credentials", r.Kind)
	}
	if len(r.Names) == 0 || r.Probe == "" || r.Site == "" {
		return SealReply{}, bus.Errorf(400, "credentials_seal needs site, probe and at least one credential name")
	}
	var errs []error
	var creds []clearCredential
	for _, name := range r.Names {
		c, err := s.creds.named(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			errs = append(errs, fmt.Errorf("credential %q not found (`outpost credentials ls`)", name))
		case err != nil:
			return SealReply{}, err
		case c.site != r.Site:
			// Credentials are scoped to a site: a site's bridges never see another's secrets.
			errs = append(errs, fmt.Errorf("credential %q belongs to site %s, not %s", name, c.site, r.Site))
		case !slices.Contains(types, c.Type):
			errs = append(errs, fmt.Errorf("credential %q is of type %s; %s takes %s", name, c.Type, r.Kind, strings.Join(types, " or ")))
		default:
			creds = append(creds, c.clearCredential)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return SealReply{}, bus.Errorf(400, "%v", err)
	}
	if s.deps.CurveKey == nil {
		return SealReply{}, bus.Errorf(503, "the hub has no curve key: credentials cannot be sealed")
	}
	keys, err := s.recipients(ctx, r.Site)
	if err != nil {
		return SealReply{}, err
	}
	if len(keys) == 0 {
		return SealReply{}, bus.Errorf(409, "site %s has no approved bridge to seal credentials to (`outpost agents ls`)", r.Site)
	}
	out := SealReply{Secrets: make([]envelope.SealedCredential, 0, len(creds))}
	for _, c := range creds {
		sc, err := seal.Seal(s.deps.CurveKey, seal.Secret{Name: c.Name, Type: c.Type, Username: c.Username, Secret: c.Secret,
			Fields: c.Fields, AllowInsecure: c.AllowInsecure, Probe: r.Probe, Time: s.now()}, keys)
		if err != nil {
			return SealReply{}, err
		}
		out.Secrets = append(out.Secrets, sc)
	}
	if r.Kind == "ssh_exec" && r.Target != "" {
		host := r.Target
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if addr, err := netip.ParseAddr(host); err == nil {
			if out.KnownHostKey, err = s.knownHostKey(ctx, r.Site, addr.String()); err != nil {
				return SealReply{}, err
			}
		}
	}
	return out, nil
}

type siteCredential struct {
	clearCredential
	site string
}

// named opens one credential by name (jetstream.ErrKeyNotFound when there is none).
func (s *credStore) named(ctx context.Context, name string) (siteCredential, error) {
	if !bus.ValidName(name) {
		return siteCredential{}, jetstream.ErrKeyNotFound
	}
	e, err := s.kv.Get(ctx, name)
	if err != nil {
		return siteCredential{}, err
	}
	var sc storedCredential
	if err := json.Unmarshal(e.Value(), &sc); err != nil {
		return siteCredential{}, fmt.Errorf("credential %s: %w", name, err)
	}
	c, err := s.decrypt(sc)
	return siteCredential{clearCredential: c, site: sc.Site}, err
}
