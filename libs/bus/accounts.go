package bus

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// Accounts of every hub server, embedded or clustered.
//
// Hub services, streams and KV live in HUB. Bridges live in BRIDGES, placed there by the auth
// callout, and reach HUB only through the service imports below. NATS checks a client's
// publish permissions on a message's subject, not on its reply subject, and a responder
// answers in its own account: a client sharing HUB could steer a service's or JetStream's
// answer onto $KV.tokens.…, cmdb.ingest.… or the audit subject. Across accounts, an answer
// to an imported service goes back to the requester's reply *in the requester's account*, so
// the worst a bridge can do with a reply subject is write into BRIDGES, which holds no data.
//
// One BRIDGES account for every site rather than one per site: config-mode accounts are
// fixed at start, and the same accounts must be expressible in deployments/nats for a
// cluster; sites come and go at runtime. Per-site least privilege stays with the per-user
// permissions the auth callout issues (a bridge may only publish its own site's subjects).
//
// The hub's JetStream has no domain: bridges' outboxes are separate embedded servers, not leaf
// nodes, so nothing addresses the hub by domain, and a domain costs a subject-mapping check
// on every message in HUB (measured: about 15 µs of hub CPU per probe round trip). Leaf-node
// sites, if they ever come, get domains then.
const (
	AccountHub     = "HUB"
	AccountBridges = "BRIDGES"
	AccountSys     = "SYS"
	// BridgeJSAPIPrefix is where a bridge finds the hub's JetStream API for its probe
	// consumers: BRIDGES has no JetStream of its own, and the server answers "$JS.API.>" and
	// "$JS.<domain>.API.>" of such an account itself ("not enabled"), so the imports are
	// mapped under a prefix of ours (jetstream.NewWithAPIPrefix).
	BridgeJSAPIPrefix = "outpost.jsapi"
)

// AccountsConf is the accounts block of every hub server. deployments/nats/accounts.conf is
// this text (a test keeps them equal); the embedded hub applies it with the variables
// defined in front (AccountVars). Variables: $HUB_PASSWORD, $SYS_PASSWORD, $CALLOUT_ISSUER.
const AccountsConf = `# Outpost hub accounts, shared by hub.conf and cluster/n*.conf through
#   include "accounts.conf"        (hub.conf)
#   include "../accounts.conf"     (cluster/n*.conf)
# Generated from libs/bus/accounts.go (AccountsConf): the embedded hub of
# ` + "`outpost up`" + ` runs the very same text, and a test keeps them equal.
#
# Secrets are never written here: they come from the environment (an unquoted
# $NAME is a variable, looked up in the environment when not defined in the
# file). The server refuses to start if one is unset.
#   HUB_PASSWORD    the hub services' password (<data>/hub.secret of the hub;
#                   a bcrypt hash from ` + "`nats server passwd`" + ` is taken verbatim)
#   SYS_PASSWORD    the system account's password (operators' nats CLI)
#   CALLOUT_ISSUER  public account NKey (A...) whose seed is <data>/callout.nk:
#                   it signs the auth callout's answers

system_account: SYS

accounts {
  SYS {
    users: [
      { user: sys, password: $SYS_PASSWORD }
      # Nobody holds this key's seed (it was thrown away): the user only makes a
      # standalone nats-server send every client a nonce, which bridges sign with
      # their NKey for the auth callout (the embedded hub sets AlwaysEnableNonce,
      # which no config file option can). Without it bridges fail with
      # "nkeys not supported by the server".
      { nkey: UA2TVPQ6AMTNI3HZZ5JLENMKMRK5SMKSP7ZLCGFFROJNNYETN25YIWK5, permissions: { publish: { deny: ">" }, subscribe: { deny: ">" } } }
    ]
  }

  # Hub services, streams, KV. Bridges reach it only through the exports below,
  # each one a service: an answer (a JetStream publish ack, a pulled probe, an
  # enrollment reply) goes back to the requester's reply in BRIDGES, so a reply
  # subject chosen by a bridge can never land in hub data.
  HUB {
    jetstream: enabled
    users: [
      { user: hub, password: $HUB_PASSWORD }
    ]
    exports: [
      # enrollment and the periodic re-registration
      { service: "svc.agents.enroll", response_type: singleton }
      # bridge builds for self-upgrade: one chunk of one build per request, read
      # from the object store by the agents service (no object store API for bridges)
      { service: "svc.agents.build_chunk", response_type: singleton }
      # the site's shared probe consumers: pull (many answers), info, ack; BRIDGES
      # maps the first two under outpost.jsapi (see BridgeJSAPIPrefix)
      { service: "$JS.API.CONSUMER.MSG.NEXT.PROBES.*", response_type: stream }
      { service: "$JS.API.CONSUMER.INFO.PROBES.*", response_type: singleton }
      { service: "$JS.ACK.PROBES.>", response_type: singleton }
      # what bridges send: results, events, dead letters (JetStream publishes,
      # acknowledged), heartbeats (core NATS)
      { service: "result.>", response_type: singleton }
      { service: "event.>", response_type: singleton }
      { service: "dlq.bridge.>", response_type: singleton }
      { service: "agent.heartbeat.>" }
    ]
    imports: [
      # control requests to bridges (ping, pause, drain, logs)
      { service: { account: BRIDGES, subject: "agent.ctl.>" } }
    ]
  }

  # Every bridge, placed here by the auth callout with permissions limited to
  # its site. No JetStream, no data.
  BRIDGES {
    exports: [
      { service: "agent.ctl.>", response_type: singleton }
    ]
    imports: [
      { service: { account: HUB, subject: "svc.agents.enroll" } }
      { service: { account: HUB, subject: "svc.agents.build_chunk" } }
      { service: { account: HUB, subject: "$JS.API.CONSUMER.MSG.NEXT.PROBES.*" }, to: "outpost.jsapi.CONSUMER.MSG.NEXT.PROBES.*" }
      { service: { account: HUB, subject: "$JS.API.CONSUMER.INFO.PROBES.*" }, to: "outpost.jsapi.CONSUMER.INFO.PROBES.*" }
      { service: { account: HUB, subject: "$JS.ACK.PROBES.>" } }
      { service: { account: HUB, subject: "result.>" } }
      { service: { account: HUB, subject: "event.>" } }
      { service: { account: HUB, subject: "dlq.bridge.>" } }
      { service: { account: HUB, subject: "agent.heartbeat.>" } }
    ]
  }
}

# Every connection that is not a hub service's (or the system user's) goes to
# the agents service, which checks the bridge's NKey against the registry and
# answers with a user JWT for account BRIDGES carrying its site's permissions.
authorization {
  auth_callout {
    issuer: $CALLOUT_ISSUER
    account: HUB
    auth_users: [ hub, sys ]
    allowed_accounts: [ BRIDGES ]
  }
}
`

// AccountVars are the values of AccountsConf's variables.
type AccountVars struct {
	HubPassword, SysPassword, CalloutIssuer string
}

// ApplyAccounts configures a server's accounts, users and auth callout from AccountsConf.
func ApplyAccounts(o *server.Options, v AccountVars) error {
	var errs []error
	for name, val := range map[string]string{"hub password": v.HubPassword, "sys password": v.SysPassword, "callout issuer": v.CalloutIssuer} {
		if val == "" {
			errs = append(errs, fmt.Errorf("accounts: %s is empty", name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var b strings.Builder
	for _, kv := range [][2]string{{"HUB_PASSWORD", v.HubPassword}, {"SYS_PASSWORD", v.SysPassword}, {"CALLOUT_ISSUER", v.CalloutIssuer}} {
		fmt.Fprintf(&b, "%s: %s\n", kv[0], strconv.Quote(kv[1]))
	}
	b.WriteString(AccountsConf)
	if err := o.ProcessConfigString(b.String()); err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	return nil
}
