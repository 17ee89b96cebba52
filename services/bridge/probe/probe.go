// Package probe is the bridge's plugin interface for probe kinds. A kind is a package
// exporting NewFactory(); the bridge binary lists its factories in one place (see Registry).
//
// A Runner turns one probe (target + params + credentials) into a result: data, or an error
// with a stable code. It must honour ctx (the probe's deadline and cancellation), never
// connect outside the target it was given, and never put a secret in its data or errors.
package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/libs/probes/schema"
)

// Factory creates the runner of one probe kind.
type Factory interface {
	// Spec is the kind's contract (libs/probes/<kind>): its name ("echo", "tcp_scan"), the
	// capability a site grants for it (probes travel on
	// probe.<site>.<priority>.<capability>), the credential types it takes and its params,
	// whose Go type is the schema DecodeParams validates against.
	Spec() probes.Spec
	// DefaultConfig is the kind's bridge-side configuration (limits, defaults), a struct
	// value; Create receives it, possibly changed by the operator in the bridge's config
	// file (kinds: <kind>: ...). A config with a Validate() error method is checked at
	// start.
	DefaultConfig() any
	Create(ctx context.Context, set Settings, cfg any) (Runner, error)
}

// Runner runs probes of one kind. It is shared by all workers: Run must be safe for
// concurrent use.
type Runner interface {
	// Run executes one probe. emit sends an intermediate chunk of data (streamed results:
	// scan batches, walk pages) — optional; the returned value is the final chunk's data.
	// Errors: return *Error with a code for anything the user must know (bad params, refused,
	// auth failed); ctx.Err() when the deadline passed or the probe was cancelled.
	Run(ctx context.Context, req Request, emit Emit) (any, error)
}

// Emit sends one non-final chunk of a result. It blocks when the outbox is full.
type Emit func(ctx context.Context, data any) error

// Request is one probe as a runner sees it.
type Request struct {
	Probe       envelope.Probe
	Target      string
	Params      json.RawMessage
	Credentials []Credential
}

// Credential is a secret resolved for this probe (never logged: see LogValue).
type Credential struct {
	Name     string
	Type     string // ssh | snmp | snmpv3 | ldap | sql | http
	Username string
	Secret   string            // password, community, key…
	Fields   map[string]string // type-specific (auth_protocol, priv_password, database…)
	// AllowInsecure lets this credential travel over plaintext or unverified TLS. Only an
	// admin can store it; without it a kind refuses to send the secret over anything less
	// than verified TLS (SSH is always encrypted; its host key is checked instead).
	AllowInsecure bool
}

// LogValue keeps secrets out of logs.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("type", c.Type), slog.String("username", c.Username))
}

// CheckCredentials refuses (denied) credentials a kind does not take (its Spec's
// Credentials, in libs/probes/catalog): a secret is only ever sent to the protocol it was
// stored for, even when a hub sends something else. The bridge checks before running a probe; kinds check
// again so that no runner can be handed a wrong secret by mistake.
func CheckCredentials(kind string, creds []Credential) error {
	if len(creds) == 0 {
		return nil
	}
	types := catalog.CredentialTypes(kind)
	var errs []string
	for _, c := range creds {
		if !slices.Contains(types, c.Type) {
			errs = append(errs, fmt.Sprintf("credential %s is of type %s", c.Name, orNone(c.Type)))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	want := "no credentials"
	if len(types) > 0 {
		want = "only credentials of type " + strings.Join(types, " or ")
	}
	return Errorf(CodeDenied, "%s; %s takes %s: refused before anything was sent", strings.Join(errs, ", "), kind, want)
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// RequireSecure refuses (denied) to send credentials over transport — "plaintext http",
// "LDAP without TLS", "TLS without certificate verification" — unless every one of them
// allows it (AllowInsecure). Kinds call it before the first byte of a secret leaves.
func RequireSecure(creds []Credential, transport string) error {
	var names []string
	for _, c := range creds {
		if !c.AllowInsecure {
			names = append(names, c.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return Errorf(CodeDenied, "credential %s would be sent over %s: refused (use verified TLS, or have an admin store the credential with allow_insecure)",
		strings.Join(names, ", "), transport)
}

// Settings are what the bridge gives every runner.
type Settings struct {
	Logger *slog.Logger
	// Dial opens connections; the bridge wraps it so that nothing outside the site's allowed
	// ranges can be reached even by a buggy kind.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Allowed reports whether an address may be probed (the effective allow-list).
	Allowed func(ip net.IP) bool
	// MaxOutput bounds the data of one chunk (default 512 KiB); larger output is chunked
	// through Emit or reported as truncated with a flag — never silently cut.
	MaxOutput int
	// Now is the bridge's clock: what a kind stamps and measures (durations, a certificate's
	// validity) reads it through Time and Since. I/O deadlines stay on the real clock (the
	// runtime keeps them): clock.Past aborts I/O now.
	Now func() time.Time
}

// Time is now by the settings' clock (Now), or by the real clock when none was given.
func (s Settings) Time() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return clock.Real().Now()
}

// Since is the time elapsed since t by the settings' clock.
func (s Settings) Since(t time.Time) time.Duration { return s.Time().Sub(t) }

// Error is a probe failure with a stable code, carried in the result's error.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Stable error codes (libs/probes documents them; a kind's own codes live in its contract
// package, e.g. sshexec.CodeHostKeyMismatch).
const (
	CodeBadParams   = probes.CodeBadParams
	CodeDecode      = probes.CodeDecode
	CodeDenied      = probes.CodeDenied
	CodeUnreachable = probes.CodeUnreachable
	CodeAuth        = probes.CodeAuth
	CodeProtocol    = probes.CodeProtocol
	CodeTooLarge    = probes.CodeTooLarge
	CodeInternal    = probes.CodeInternal
	CodeUnsupported = probes.CodeUnsupported
	CodeTimeout     = probes.CodeTimeout
	CodeExpired     = probes.CodeExpired
	CodeCanceled    = probes.CodeCanceled
	CodePanic       = probes.CodePanic
)

// Errorf returns a probe Error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// DecodeParams checks params against the schema of v's type (its kind's Params: unknown
// fields, types, enums and bounds, every problem naming its field) and decodes them into v.
// Empty params leave v at its defaults.
func DecodeParams(params json.RawMessage, v any) error {
	if err := schema.For(v).Validate("params", params); err != nil {
		return Errorf(CodeBadParams, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if len(bytes.TrimSpace(params)) == 0 || string(params) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadParams, "params: %v", err)
	}
	return nil
}

// CodeOf returns the code of err: its *Error code, timeout/canceled for context errors,
// internal otherwise.
func CodeOf(err error) string {
	var pe *Error
	switch {
	case errors.As(err, &pe):
		return pe.Code
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	default:
		return CodeInternal
	}
}
