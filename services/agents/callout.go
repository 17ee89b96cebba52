package agents

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// Per-site permissions are enforced by NATS itself through auth callout: every connection
// that is not a hub service's goes to this responder, which decides from the registry what
// the identity may do and answers with a user JWT carrying exactly those permissions:
//
//   - an unknown NKey with a valid enrollment token, or a pending agent: only enroll;
//   - an approved agent: its site's probe consumers of groups it serves, results, events and heartbeat;
//   - a revoked agent, or anything else: refused.
//
// Decisions are made at connect time; approval and revocation close the agent's
// connection so it reconnects into its new rights (Kick).

// CalloutSubject is where the server asks.
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// userJWTTTL bounds how long a decision lives even if a kick is missed: the server closes the
// connection when its user JWT expires and the agent reconnects through the callout again.
const userJWTTTL = time.Hour

// Permissions of a pending identity: enroll, read the answer.
func pendingPermissions(nkey string) jwt.Permissions {
	var p jwt.Permissions
	p.Pub.Allow.Add(bus.ServiceSubject("agents", "enroll"))
	p.Sub.Allow.Add(bus.InboxPrefix(nkey) + ".>")
	return p
}

// Permissions of an approved agent of a site, whose probe consumer groups are groups.
func sitePermissions(a Agent, groups []bus.ProbeGroup) jwt.Permissions {
	var p jwt.Permissions
	for _, prio := range envelope.Priorities {
		for _, key := range bus.GroupKeysOf(groups, a.Name) {
			// Only the groups of cells it serves: a bridge dedicated to orchestration cannot
			// pull a discovery probe even if it tried, nor another site's or profile's.
			cons := bus.ProbeConsumer(a.Site, prio, key)
			p.Pub.Allow.Add(bus.BridgeJSAPIPrefix+".CONSUMER.MSG.NEXT."+bus.StreamProbes+"."+cons,
				bus.BridgeJSAPIPrefix+".CONSUMER.INFO."+bus.StreamProbes+"."+cons,
				"$JS.ACK."+bus.StreamProbes+"."+cons+".>")
		}
	}
	p.Pub.Allow.Add(bus.ResultSubject("*", a.Site, "*", a.Name), "event."+a.Site+".>", bus.HeartbeatSubject(a.Site, a.Name),
		bus.ServiceSubject("agents", "enroll"), bus.BridgeDLQSubject(a.Site), bus.ServiceSubject("agents", "build_chunk"))
	p.Sub.Allow.Add(bus.InboxPrefix(a.ID)+".>", bus.ControlSubject(a.Site, a.Name))
	// Answers to control requests go to the requester's inbox.
	p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	return p
}

// callout answers the server's authorization requests.
type callout struct {
	reg    *Registry
	issuer nkeys.KeyPair
	log    *slog.Logger
}

func (c *callout) handle(ctx context.Context, m *nats.Msg) {
	req, err := jwt.DecodeAuthorizationRequestClaims(string(m.Data))
	if err != nil {
		c.log.Error("auth callout: unreadable request", "err", err)
		return
	}
	name, perms, err := c.decide(ctx, req)
	var token string
	if err != nil {
		c.log.Warn("connection refused", "nkey", req.ConnectOptions.Nkey, "client", req.ClientInformation.Host, "reason", err)
		token, err = c.respond(req, "", err.Error())
	} else {
		uc := jwt.NewUserClaims(req.UserNkey)
		uc.Name = name
		// Bridges live in their own account: a reply subject they choose can only ever
		// land in BRIDGES, never in the hub's data (libs/bus/accounts.go).
		uc.Audience = bus.AccountBridges
		uc.Expires = time.Now().Add(userJWTTTL).Unix()
		uc.Permissions = perms
		var ujwt string
		if ujwt, err = uc.Encode(c.issuer); err == nil {
			token, err = c.respond(req, ujwt, "")
		}
	}
	if err != nil {
		c.log.Error("auth callout: encode answer", "err", err)
		return
	}
	_ = m.Respond([]byte(token))
}

func (c *callout) respond(req *jwt.AuthorizationRequestClaims, ujwt, errMsg string) (string, error) {
	rc := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	rc.Audience = req.Server.ID
	rc.Jwt = ujwt
	rc.Error = errMsg
	return rc.Encode(c.issuer)
}

// decide verifies the NKey signature of the connection and maps the identity to rights.
func (c *callout) decide(ctx context.Context, req *jwt.AuthorizationRequestClaims) (string, jwt.Permissions, error) {
	opts := req.ConnectOptions
	if opts.Nkey == "" || opts.SignedNonce == "" {
		return "", jwt.Permissions{}, errors.New("an NKey identity is required: bridges connect with the key in their data dir")
	}
	if err := verifyNonce(opts.Nkey, req.ClientInformation.Nonce, opts.SignedNonce); err != nil {
		return "", jwt.Permissions{}, err
	}
	a, err := c.reg.AgentByNKey(ctx, opts.Nkey)
	switch {
	case err == nil && a.State == StateApproved:
		// The groups from the registry as it is now: the consumers syncSite declares from it.
		sb, err := c.reg.SiteBridges(ctx, a.Site)
		if err != nil {
			return "", jwt.Permissions{}, fmt.Errorf("registry unavailable: %w", err)
		}
		return a.Key(), sitePermissions(a, sb.Groups()), nil
	case err == nil && a.State == StatePending:
		return a.Key(), pendingPermissions(opts.Nkey), nil
	case err == nil:
		return "", jwt.Permissions{}, fmt.Errorf("agent %s/%s is revoked", a.Site, a.Name)
	case !errors.Is(err, errNotFound):
		return "", jwt.Permissions{}, fmt.Errorf("registry unavailable: %w", err)
	}
	if _, err := c.reg.token(ctx, opts.Token); err != nil {
		return "", jwt.Permissions{}, errors.New("unknown identity and no valid enrollment token")
	}
	return enrollingUser(opts.Nkey), pendingPermissions(opts.Nkey), nil
}

// enrollingUser names the connection of an identity not yet in the registry.
func enrollingUser(nkey string) string { return "enrolling." + nkey }

func verifyNonce(pub, nonce, sig string) error {
	kp, err := nkeys.FromPublicKey(pub)
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return errors.New("not a user NKey")
	}
	raw, err := decodeSig(sig)
	if err != nil {
		return err
	}
	if err := kp.Verify([]byte(nonce), raw); err != nil {
		return errors.New("NKey signature does not verify")
	}
	return nil
}
