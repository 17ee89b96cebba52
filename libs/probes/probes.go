// Package probes is the contract of the probe kinds, shared by the bridge that runs them and
// every service that reads their results (discovery today; import and orchestration next):
// the Spec each kind's package declares (libs/probes/<kind>), the error codes a result may
// carry, and the wire types several kinds share. The one table of every kind is
// libs/probes/catalog.
//
// Nothing here runs a probe: the runners live in services/bridge/probe/<kind> and import
// their kind's package for its Params, Result and codes.
package probes

import (
	"slices"

	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// Spec is what one probe kind is, for everyone: its name, the capability a site grants for
// it (probes travel on probe.<site>.<priority>.<capability>), the credential types it takes,
// its params (whose Go type is the one spec of what a probe may ask: see package schema)
// and its result.
type Spec struct {
	Kind       string
	Capability string
	// Credentials are the credential types the kind accepts (envelope.Cred*); none: it
	// takes no credentials. The hub seals nothing else to a probe of this kind, and the
	// bridge refuses (denied) a probe carrying anything else: a secret only ever goes to
	// the protocol it was stored for.
	Credentials []string
	Description string
	// Params is the zero value of the kind's Params type.
	Params any
	// Result is the zero value of the final chunk's data; Chunk that of a streamed
	// (non-final) chunk, nil when the kind does not stream.
	Result any
	Chunk  any
	// Codes are the error codes the kind returns beyond the common ones (Codes below).
	Codes []Code
}

// ParamsSchema is the JSON Schema of the kind's params, derived from its Params type.
func (s Spec) ParamsSchema() *schema.Schema { return schema.For(s.Params) }

// ValidateParams checks raw params against the kind's schema: unknown fields, types, enums
// and bounds, each problem naming its field (params.ports[2]: ...).
func (s Spec) ValidateParams(raw []byte) error { return s.ParamsSchema().Validate("params", raw) }

// Takes reports whether the kind accepts a credential of type typ.
func (s Spec) Takes(typ string) bool { return slices.Contains(s.Credentials, typ) }

// Code is a stable error code a probe result carries (envelope.Error.Code): readers switch
// on it, never on the message.
type Code struct {
	Code        string `json:"code"`
	Description string `json:"description"`
	// Retryable says whether the same probe may succeed later without anyone changing
	// anything (a timeout, a cancelled probe), as opposed to bad params or a refusal.
	Retryable bool `json:"retryable"`
}

// The error codes every kind may return.
const (
	CodeBadParams   = "bad_params"  // params missing, malformed or beyond a limit
	CodeDecode      = "decode"      // the probe itself could not be read
	CodeDenied      = "denied"      // outside the allow-list, kind not granted, credential of the wrong type
	CodeUnreachable = "unreachable" // connection refused, no route
	CodeAuth        = "auth_failed" // every credential was refused
	CodeProtocol    = "protocol"    // the peer spoke something else, or garbage
	CodeTooLarge    = "too_large"   // output beyond the limit
	CodeInternal    = "internal"    // a bug: report it
	CodeUnsupported = "unsupported" // the kind cannot do what was asked
	CodeTimeout     = "timeout"     // the deadline passed
	// CodeExpired: the deadline passed before the probe started (it waited in the queue):
	// nothing was sent to the target, so it says nothing about it — unlike a timeout, which
	// may be the target's silence. A caller resends it like a probe without a result.
	CodeExpired  = "expired"
	CodeCanceled = "canceled" // the probe was cancelled (drain, shutdown)
	CodePanic    = "panic"    // the kind panicked: a bug, its stack is in the bridge log
)

// Codes documents the common error codes, in one table (the service error table refers to
// it for result codes).
var Codes = []Code{
	{CodeBadParams, "params missing, malformed or beyond a limit: fix the probe", false},
	{CodeDecode, "the probe itself could not be read", false},
	{CodeDenied, "refused before anything was sent: outside the allowed ranges, capability not granted, or a credential of the wrong type or over an insecure transport", false},
	{CodeUnreachable, "connection refused or no route to the target", true},
	{CodeAuth, "every credential was refused", false},
	{CodeProtocol, "the target spoke another protocol, or garbage", false},
	{CodeTooLarge, "output beyond the limit", false},
	{CodeInternal, "a bug in the bridge: report it", false},
	{CodeUnsupported, "the kind cannot do what was asked (a driver or feature it does not have)", false},
	{CodeTimeout, "the deadline passed", true},
	{CodeExpired, "the deadline passed before the probe started (it waited for a bridge worker too long): nothing was sent to the target; send it again, with a longer deadline if the site is busy", true},
	{CodeCanceled, "the probe was cancelled (bridge drain or shutdown)", true},
	{CodePanic, "the probe kind panicked (a bug in the bridge: report it with the stack from the bridge log); the bridge kept running and the probe is not retried", false},
}
