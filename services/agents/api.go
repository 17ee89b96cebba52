package agents

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// AgentView is an agent as operators see it: its record plus what its heartbeat says.
type AgentView = agentsapi.AgentView

func (s *Service) view(ctx context.Context, a Agent) AgentView {
	v := AgentView{Agent: a, Status: a.State}
	b, ok := s.reg.LastBeat(ctx, a.Site, a.Name)
	if ok {
		t := b.Received
		v.LastHeartbeat, v.Pools, v.OutboxBytes, v.OutboxFull, v.Uptime, v.RSS = &t, b.Pools, b.OutboxBytes, b.OutboxFull, b.Uptime, b.RSS
		if b.Version != "" {
			v.Version = b.Version
		}
		v.Upgrade = b.Upgrade
	}
	if a.State == StateApproved {
		switch {
		case !ok:
			v.Status = "down"
		case b.State == "paused" || b.State == "draining":
			v.Status = b.State
		default:
			v.Status = "up"
		}
	}
	return v
}

// Requests and answers of the svc.agents.* endpoints: the contract's (libs/api/agents).
type (
	SiteAddRequest   = agentsapi.SiteAddRequest
	SiteAddReply     = agentsapi.SiteAddReply
	TokenAddRequest  = agentsapi.TokenAddRequest
	TokenAddReply    = agentsapi.TokenAddReply
	TokenListRequest = agentsapi.TokenListRequest
	TokenRef         = agentsapi.TokenRef
	AgentRef         = agentsapi.AgentRef
	ControlRequest   = agentsapi.ControlRequest
	ControlReply     = agentsapi.ControlReply
	ProbeRequest     = agentsapi.ProbeRequest
	ProbeReply       = agentsapi.ProbeReply
)

// Control commands a bridge understands.
var controlCommands = map[string]bool{agentsapi.CommandPing: true, agentsapi.CommandPause: true, agentsapi.CommandResume: true,
	agentsapi.CommandDrain: true, agentsapi.CommandLogs: true}

func (s *Service) endpoints() map[string]bus.Endpoint {
	return map[string]bus.Endpoint{
		agentsapi.Enroll.Name: agentsapi.Enroll.Handle(s.enroll),
		agentsapi.SiteAdd.Name: agentsapi.SiteAdd.Handle(func(ctx context.Context, r SiteAddRequest) (SiteAddReply, error) {
			o, err := ParseTokenOptions(r.TokenTTL, r.TokenUses, r.AutoApprove)
			if err != nil {
				return SiteAddReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
			}
			site, tok, info, err := s.reg.AddSite(ctx, r.Name, r.Ranges, r.Exclude, o)
			if err != nil {
				return SiteAddReply{}, err
			}
			s.log.Info("enrollment token created", "site", site.Name, "token", info.ID, "expires", info.Expires, "max_uses", info.MaxUses, "auto_approve", info.AutoApprove)
			return SiteAddReply{Site: site, Token: tok, TokenInfo: info}, nil
		}),
		agentsapi.SiteTokenAdd.Name: agentsapi.SiteTokenAdd.Handle(func(ctx context.Context, r TokenAddRequest) (TokenAddReply, error) {
			o, err := ParseTokenOptions(r.TTL, r.Uses, r.AutoApprove)
			if err != nil {
				return TokenAddReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
			}
			tok, info, err := s.reg.NewToken(ctx, r.Site, o)
			if err != nil {
				return TokenAddReply{}, err
			}
			s.log.Info("enrollment token created", "site", r.Site, "token", info.ID, "expires", info.Expires, "max_uses", info.MaxUses, "auto_approve", info.AutoApprove)
			return TokenAddReply{Token: tok, TokenInfo: info}, nil
		}),
		// Oldest first, paged by creation time and ID; never the secret or its hash.
		agentsapi.SiteTokenList.Name: agentsapi.SiteTokenList.Handle(func(ctx context.Context, r TokenListRequest) (agentsapi.TokenListReply, error) {
			if r.Site != "" {
				if _, err := s.reg.Site(ctx, r.Site); err != nil {
					return agentsapi.TokenListReply{}, bus.Errorf(http.StatusNotFound, "site %s does not exist; `outpost site ls` lists them", r.Site)
				}
			}
			all, err := s.reg.Tokens(ctx, r.Site)
			if err != nil {
				return agentsapi.TokenListReply{}, err
			}
			items, next, err := page.Slice(all, r.Request, tokenOrder, strings.Compare)
			if err != nil {
				return agentsapi.TokenListReply{}, err
			}
			return agentsapi.TokenListReply{Tokens: items, NextCursor: next}, nil
		}),
		agentsapi.SiteTokenRevoke.Name: agentsapi.SiteTokenRevoke.Handle(func(ctx context.Context, r TokenRef) (TokenView, error) {
			info, err := s.reg.RevokeToken(ctx, r.ID)
			if err != nil {
				return TokenView{}, err
			}
			s.log.Info("enrollment token revoked", "site", info.Site, "token", info.ID)
			return info, nil
		}),
		// Lists page by name (sites) and SITE.NAME (agents); see libs/page.
		agentsapi.SiteList.Name: agentsapi.SiteList.Handle(func(ctx context.Context, r page.Request) (agentsapi.SiteListReply, error) {
			sites, err := s.reg.Sites(ctx)
			if err != nil {
				return agentsapi.SiteListReply{}, err
			}
			items, next, err := page.Slice(sites, r, func(x Site) string { return x.Name }, strings.Compare)
			if err != nil {
				return agentsapi.SiteListReply{}, err
			}
			return agentsapi.SiteListReply{Sites: items, NextCursor: next}, nil
		}),
		agentsapi.List.Name: agentsapi.List.Handle(func(ctx context.Context, r page.Request) (agentsapi.ListReply, error) {
			all, err := s.reg.Agents(ctx)
			if err != nil {
				return agentsapi.ListReply{}, err
			}
			items, next, err := page.Slice(all, r, Agent.Key, strings.Compare)
			if err != nil {
				return agentsapi.ListReply{}, err
			}
			views := make([]AgentView, 0, len(items))
			for _, a := range items {
				views = append(views, s.view(ctx, a))
			}
			return agentsapi.ListReply{Agents: views, NextCursor: next}, nil
		}),
		agentsapi.Approve.Name: agentsapi.Approve.Handle(func(ctx context.Context, r AgentRef) (AgentView, error) {
			return s.setState(ctx, r.Agent, StateApproved)
		}),
		agentsapi.Revoke.Name: agentsapi.Revoke.Handle(func(ctx context.Context, r AgentRef) (AgentView, error) {
			return s.setState(ctx, r.Agent, StateRevoked)
		}),
		// forget frees a revoked agent's name for a new enrollment; its key stays revoked.
		agentsapi.Forget.Name: agentsapi.Forget.Handle(func(ctx context.Context, r AgentRef) (agentsapi.ForgetReply, error) {
			if r.Agent == "" {
				return agentsapi.ForgetReply{}, bus.Errorf(http.StatusBadRequest, "agent is empty: give NAME or SITE/NAME")
			}
			a, err := s.reg.Forget(ctx, r.Agent)
			if err != nil {
				return agentsapi.ForgetReply{}, err
			}
			if _, err := s.syncSite(ctx, a.Site); err != nil {
				return agentsapi.ForgetReply{}, err
			}
			s.log.Info("agent forgotten: its name may enroll again, its key stays revoked", "agent", a.Name, "site", a.Site)
			return agentsapi.ForgetReply{Agent: a.Name, Site: a.Site, Status: "forgotten"}, nil
		}),
		agentsapi.Control.Name: agentsapi.Control.Handle(s.control),
		agentsapi.Probe.Name:   agentsapi.Probe.Handle(s.probe),
		agentsapi.SitePinVersion.Name: agentsapi.SitePinVersion.Handle(func(ctx context.Context, r agentsapi.PinVersionRequest) (Site, error) {
			site, err := s.reg.PinVersion(ctx, r.Site, r.Version)
			if err == nil {
				s.log.Info("bridge version pinned", "site", site.Name, "version", site.PinnedVersion)
			}
			return site, err
		}),
		agentsapi.BuildChunk.Name: agentsapi.BuildChunk.Handle(s.builds.chunk),
	}
}

// enroll registers a bridge whose request is signed by the key it enrolls.
func (s *Service) enroll(ctx context.Context, e envelope.Enrollment) (envelope.EnrollmentReply, error) {
	if err := e.Validate(); err != nil {
		return envelope.EnrollmentReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
	}
	if !bus.ValidName(e.Name) || !bus.ValidName(e.Site) {
		return envelope.EnrollmentReply{}, bus.Errorf(http.StatusBadRequest, "agent and site names use 1-64 of a-z, 0-9 and - (got %q in %q)", e.Name, e.Site)
	}
	if err := errors.Join(bus.CheckApps(e.Apps), checkCapabilities(e.Capabilities, e.Pools)); err != nil {
		return envelope.EnrollmentReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
	}
	kp, err := nkeys.FromPublicKey(e.NKey)
	if err != nil {
		return envelope.EnrollmentReply{}, bus.Errorf(http.StatusBadRequest, "nkey: %v", err)
	}
	sig, err := decodeSig(e.Sig)
	legacy := false
	if err != nil || kp.Verify(e.SigningBytes(), sig) != nil {
		if err != nil || kp.Verify(e.LegacySigningBytes(), sig) != nil {
			return envelope.EnrollmentReply{}, bus.Errorf(http.StatusForbidden, "enrollment signature does not verify for %s", e.NKey)
		}
		legacy = true
	}
	if d := s.deps.Now().Sub(e.Time); d > 10*time.Minute || d < -10*time.Minute {
		return envelope.EnrollmentReply{}, bus.Errorf(http.StatusForbidden, "enrollment time %s is more than 10 min from the hub's clock: check the bridge host's clock", e.Time)
	}
	if legacy {
		// Its capabilities and pools are not signed: only a known key may use the old form
		// (so that it can still re-register and upgrade itself), and what it sends of them is
		// replaced by what is on record.
		known, err := s.reg.AgentByNKey(ctx, e.NKey)
		if err != nil || known.State == StateRevoked || known.Site != e.Site || known.Name != e.Name {
			return envelope.EnrollmentReply{}, bus.Errorf(http.StatusForbidden, "this bridge signs its enrollment the old way (capabilities unsigned): upgrade it to this hub's version to enroll")
		}
		e.Capabilities, e.Pools = known.Capabilities, known.Pools
	}
	a, outcome, err := s.reg.Enroll(ctx, &e)
	if err != nil {
		var se *bus.ServiceError
		if errors.As(err, &se) && (se.Code == http.StatusForbidden || se.Code == http.StatusConflict || se.Code == http.StatusTooManyRequests) {
			if se.Code == http.StatusTooManyRequests {
				s.profileRefused.Add(1)
			}
			s.logRefusal(e, se.Message)
		}
		return envelope.EnrollmentReply{}, err
	}
	// Only now: before the token (or the key) was checked, nobody learns whether a site exists.
	site, err := s.reg.Site(ctx, e.Site)
	if err != nil {
		return envelope.EnrollmentReply{}, fmt.Errorf("site %s of agent %s: %w", e.Site, a.Key(), err)
	}
	var groups []bus.ProbeGroup
	if a.State == StateApproved {
		if groups, err = s.syncSite(ctx, a.Site); err != nil {
			return envelope.EnrollmentReply{}, err
		}
		if outcome == ReRegistered {
			s.checkConsumers(ctx, a.Site, groups)
		}
	}
	p := effective(a)
	switch outcome {
	case Enrolled:
		s.log.Info("agent enrolled", "agent", a.Name, "site", a.Site, "state", a.State, "nkey", a.ID, "version", a.Version,
			"apps", a.Apps, "capabilities", a.Capabilities)
	case ProfileRequested:
		// Recorded, not granted: an admin decides (`outpost agents show` lists it).
		s.log.Warn("agent asks for a wider profile than approved: not granted until `outpost agents approve` again",
			"agent", a.Name, "site", a.Site, "requested_apps", a.Requested.Apps, "requested_capabilities", a.Requested.Capabilities,
			"approved_apps", a.ApprovedProfile.Apps, "approved_capabilities", a.ApprovedProfile.Capabilities)
	case ProfileChanged:
		s.log.Info("agent profile changed", "agent", a.Name, "site", a.Site, "apps", p.Apps, "capabilities", p.Capabilities)
	default:
		// Bridges re-register every 30 s: only a new agent is news.
		s.log.Debug("agent re-registered", "agent", a.Name, "site", a.Site, "state", a.State, "version", a.Version)
	}
	reply := envelope.EnrollmentReply{Status: a.State, Agent: a.Name, Site: a.Site, Ranges: site.Ranges, Exclude: site.Exclude, Capabilities: p.Capabilities, HubKey: s.deps.HubKey}
	if a.Requested != nil {
		reply.Message = "a wider profile (apps, capabilities) than approved is requested: an admin runs `outpost agents approve " + a.Site + "/" + a.Name + "` to grant it"
	}
	if a.State == StateApproved {
		reply.ReleaseKey, reply.PinnedVersion = s.deps.ReleaseKey, site.PinnedVersion
		reply.ProbeGroups = bus.GroupKeysOf(groups, a.Name)
	}
	return reply, nil
}

// logRefusal records a refused enrollment at WARN (someone holds a token or a revoked key),
// once a minute per key: a refused bridge retries every 2 s.
func (s *Service) logRefusal(e envelope.Enrollment, reason string) {
	now := s.deps.Now()
	if last, ok := s.refused.Load(e.NKey); ok && now.Sub(last.(time.Time)) < time.Minute {
		return
	}
	s.refused.Store(e.NKey, now)
	s.log.Warn("enrollment refused", "agent", e.Name, "site", e.Site, "nkey", e.NKey, "reason", reason)
}

func (s *Service) setState(ctx context.Context, ref, state string) (AgentView, error) {
	if ref == "" {
		return AgentView{}, bus.Errorf(http.StatusBadRequest, "agent is empty: give NAME or SITE/NAME")
	}
	a, err := s.reg.SetState(ctx, ref, state)
	if err != nil {
		return AgentView{}, err
	}
	if _, err := s.syncSite(ctx, a.Site); err != nil {
		return AgentView{}, err
	}
	// Either way the agent's current connection carries its old rights: close it. An approved
	// bridge reconnects into its site; a revoked one is refused from now on.
	if s.deps.Kick != nil {
		for _, user := range []string{a.Key(), enrollingUser(a.ID)} {
			if err := s.deps.Kick(user); err != nil {
				s.log.Warn("kick", "agent", a.Key(), "err", err)
			}
		}
	}
	s.log.Info("agent "+state, "agent", a.Name, "site", a.Site)
	return s.view(ctx, a), nil
}

func (s *Service) control(ctx context.Context, r ControlRequest) (ControlReply, error) {
	if !controlCommands[r.Command] {
		return ControlReply{}, bus.Errorf(http.StatusBadRequest, "command %q: want ping, pause, resume, drain or logs", r.Command)
	}
	a, _, err := s.reg.FindAgent(ctx, r.Agent)
	if err != nil {
		return ControlReply{}, err
	}
	if a.State != StateApproved {
		return ControlReply{}, bus.Errorf(http.StatusConflict, "agent %s is %s", a.Name, a.State)
	}
	body, _ := json.Marshal(r)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	m, err := s.deps.NC.RequestWithContext(ctx, bus.ControlSubject(a.Site, a.Name), body)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return ControlReply{}, bus.Errorf(http.StatusServiceUnavailable, "agent %s is not connected", a.Name)
		}
		return ControlReply{}, bus.Errorf(http.StatusGatewayTimeout, "agent %s did not answer %s: %v", a.Name, r.Command, err)
	}
	var out ControlReply
	if err := json.Unmarshal(m.Data, &out); err != nil {
		return ControlReply{}, fmt.Errorf("agent %s answered garbage: %w", a.Name, err)
	}
	out.RTTMillis = float64(time.Since(start).Microseconds()) / 1000
	return out, nil
}

// probe sends one probe (interactive unless told) and waits for its final result.
func (s *Service) probe(ctx context.Context, r ProbeRequest) (ProbeReply, error) {
	capability := catalog.Capability(r.Kind)
	if capability == "" {
		return ProbeReply{}, bus.Errorf(http.StatusBadRequest, "kind %q is not a probe kind", r.Kind)
	}
	if _, err := s.reg.Site(ctx, r.Site); err != nil {
		return ProbeReply{}, bus.Errorf(http.StatusNotFound, "site %q does not exist", r.Site)
	}
	if r.Priority == "" {
		r.Priority = envelope.PriorityInteractive
	}
	timeout := 30 * time.Second
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 || d > time.Hour {
			return ProbeReply{}, bus.Errorf(http.StatusBadRequest, "timeout %q: want a duration up to 1h", r.Timeout)
		}
		timeout = d
	}
	p := &envelope.Probe{ID: envelope.NewID(), App: "adhoc", Site: r.Site, Priority: r.Priority, Kind: r.Kind,
		Capability: capability, Target: r.Target, Params: r.Params, Deadline: time.Now().Add(timeout).UTC()}
	p.Run = p.ID
	if err := p.Validate(); err != nil {
		return ProbeReply{}, bus.Errorf(http.StatusBadRequest, "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	if len(r.Credentials) > 0 {
		sealed, err := discoveryapi.CredentialSeal.Call(ctx, s.deps.NC,
			discoveryapi.SealRequest{Site: r.Site, Kind: r.Kind, Probe: p.ID, Names: r.Credentials, Target: r.Target})
		if err != nil {
			return ProbeReply{}, fmt.Errorf("credentials: %w", err)
		}
		p.Credentials, p.Secrets = r.Credentials, sealed.Secrets
		if sealed.KnownHostKey != "" {
			// the hub's known-hosts table holds for ad-hoc probes too
			params, err := withParam(p.Params, "known_host_key", sealed.KnownHostKey)
			if err != nil {
				return ProbeReply{}, bus.Errorf(http.StatusBadRequest, "params: %v", err)
			}
			p.Params = params
		}
	}
	// Listen before sending, so a fast answer is not missed.
	cons, err := s.deps.JS.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.ResultSubject("adhoc", r.Site, r.Kind, "*")}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return ProbeReply{}, err
	}
	it, err := cons.Messages()
	if err != nil {
		return ProbeReply{}, err
	}
	defer it.Stop()
	if err := bus.PublishProbe(ctx, s.deps.JS, s.pub, p); err != nil {
		return ProbeReply{}, err
	}
	reply := ProbeReply{Probe: p.ID}
	seen := map[string]bool{}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return ProbeReply{}, bus.Errorf(http.StatusGatewayTimeout, "no final result for probe %s within %s: is a bridge of site %s up and offering %s? (`outpost agents ls`)", p.ID, timeout, r.Site, capability)
		}
		_, res, err := envelope.DecodeInto[*envelope.Result](m.Headers(), m.Data())
		if err != nil || res.Probe != p.ID || seen[res.ID] {
			continue
		}
		if err := bus.ResultOrigin(m.Subject(), res); err != nil {
			// A forged answer is not shown as the probe's result; the replay keeps it.
			s.log.Warn("ad-hoc result refused", "probe", p.ID, "subject", m.Subject(), "err", err)
			continue
		}
		seen[res.ID] = true
		reply.Results = append(reply.Results, *res)
		if res.Final {
			return reply, nil
		}
	}
}

// withParam sets one param of a probe's JSON params object.
func withParam(params json.RawMessage, key string, value any) (json.RawMessage, error) {
	m := map[string]json.RawMessage{}
	if len(params) > 0 && string(params) != "null" {
		if err := json.Unmarshal(params, &m); err != nil {
			return nil, err
		}
	}
	v, err := json.Marshal(value)
	if err != nil {
		return nil, err
	}
	m[key] = v
	return json.Marshal(m)
}
