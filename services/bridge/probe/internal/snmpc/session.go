// Package snmpc is what snmp_get and snmp_walk share: sessions for v1, v2c and v3 built
// from credentials, connections through the site's guarded dialer, trying credentials in
// order, and decoding of values.
package snmpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// Options common to SNMP probes.
type Options struct {
	Version        string // "", "1", "2c", "3": "" takes it from each credential
	Timeout        time.Duration
	Retries        int
	MaxRepetitions uint32
	ContextName    string
}

// Attempt is the outcome of trying credentials (the contract's wire type).
type Attempt = snmp.Attempt

// ParseVersion checks a version param.
func ParseVersion(field, v string) (string, error) {
	switch strings.ToLower(strings.TrimPrefix(v, "v")) {
	case "":
		return "", nil
	case "1":
		return "1", nil
	case "2", "2c":
		return "2c", nil
	case "3":
		return "3", nil
	}
	return "", param.Bad(field, "%s: want 1, 2c or 3", param.Quote(v))
}

// credVersion is the version a credential is for.
func credVersion(c probe.Credential) string {
	switch strings.ToLower(c.Type) {
	case "snmpv3":
		return "3"
	case "snmp", "":
		if v, err := ParseVersion("", c.Fields["version"]); err == nil && v != "" {
			return v
		}
		if c.Username != "" && c.Fields["auth_protocol"] != "" {
			return "3"
		}
		return "2c"
	}
	return ""
}

// Try runs op with a session for each credential in order until one works. A credential
// fails when the agent reports an authentication problem (v3) or does not answer at all
// (v1/v2c agents stay silent to a wrong community).
func Try(ctx context.Context, set probe.Settings, ep target.Endpoint, creds []probe.Credential, o Options, op func(*gosnmp.GoSNMP) error) (Attempt, error) {
	var at Attempt
	at.FailedCredentials = []string{}
	tried, authErr, silent := 0, false, false
	for _, c := range creds {
		ver := credVersion(c)
		if ver == "2c" && c.Fields["version"] == "" && o.Version == "1" {
			ver = "1" // a community without a stated version serves v1 as well
		}
		if ver == "" || (o.Version != "" && o.Version != ver) {
			continue
		}
		tried++
		g, done, err := session(ctx, set, ep, c, ver, o)
		if err != nil {
			return at, err
		}
		err = op(g)
		done()
		if err == nil {
			at.Version, at.Credential = ver, c.Name
			return at, nil
		}
		switch kind := classify(ctx, err); kind {
		case "auth", "silent":
			at.FailedCredentials = append(at.FailedCredentials, c.Name)
			authErr = authErr || kind == "auth"
			silent = silent || kind == "silent"
			if set.Logger != nil {
				set.Logger.Debug("snmp credential failed", "target", ep.Addr(), "credential", c, "why", kind)
			}
		default:
			return at, errorOf(ctx, ep, err, creds)
		}
	}
	switch {
	case tried == 0:
		return at, probe.Errorf(probe.CodeBadParams, "credentials: no SNMP credential for version %s", or(o.Version, "1, 2c or 3"))
	case authErr:
		return at, probe.Errorf(probe.CodeAuth, "%s refused every credential (%s)", ep.Addr(), strings.Join(at.FailedCredentials, ", "))
	case silent:
		return at, probe.Errorf(probe.CodeTimeout, "no answer from %s to any of %d credentials within %s × %d tries (wrong community, or no SNMP agent)",
			ep.Addr(), tried, o.Timeout, o.Retries+1)
	}
	return at, probe.Errorf(probe.CodeAuth, "every credential failed")
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func classify(ctx context.Context, err error) string {
	switch {
	case ctx.Err() != nil:
		return "ctx"
	case errors.Is(err, gosnmp.ErrWrongDigest), errors.Is(err, gosnmp.ErrUnknownUsername), errors.Is(err, gosnmp.ErrDecryption),
		errors.Is(err, gosnmp.ErrUnknownSecurityLevel), errors.Is(err, gosnmp.ErrUnknownEngineID),
		// a report signed with the agent's key, which ours (from a wrong password) does not verify
		strings.Contains(err.Error(), "not authentic"):
		return "auth"
	case errors.Is(err, gosnmp.ErrMaxRetriesExceeded), errors.Is(err, context.DeadlineExceeded), target.IsTimeout(err):
		return "silent"
	}
	var pe *snmpError
	if errors.As(err, &pe) && pe.status == gosnmp.AuthorizationError {
		return "auth"
	}
	return "other"
}

func errorOf(ctx context.Context, ep target.Endpoint, err error, creds []probe.Credential) error {
	var pe *probe.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, syscall.ECONNREFUSED):
		return probe.Errorf(probe.CodeUnreachable, "%s: port unreachable (no SNMP agent)", ep.Addr())
	}
	return probe.Errorf(probe.CodeProtocol, "%s: %s", ep.Addr(), param.Redact(err.Error(), param.Secrets(creds)...))
}

// snmpError is an error-status in a response PDU.
type snmpError struct {
	status gosnmp.SNMPError
	index  uint8
}

func (e *snmpError) Error() string {
	return fmt.Sprintf("agent answered %s (index %d)", e.status, e.index)
}

// Check turns a response's error-status into an error.
func Check(p *gosnmp.SnmpPacket) error {
	if p != nil && p.Error != gosnmp.NoError {
		return &snmpError{p.Error, p.ErrorIndex}
	}
	return nil
}

// session builds a GoSNMP for one credential whose connection comes from the guarded
// dialer. gosnmp has no dial hook: Connect validates the parameters and opens a UDP socket
// (which sends nothing); that socket is replaced at once by ours.
func session(ctx context.Context, set probe.Settings, ep target.Endpoint, c probe.Credential, ver string, o Options) (*gosnmp.GoSNMP, func(), error) {
	g := &gosnmp.GoSNMP{
		Target: ep.IP.String(), Port: uint16(ep.Port), Transport: "udp",
		Timeout: o.Timeout, Retries: o.Retries, Context: ctx, MaxOids: gosnmp.MaxOids,
		MaxRepetitions: o.MaxRepetitions, ContextName: o.ContextName,
	}
	switch ver {
	case "1":
		g.Version, g.Community = gosnmp.Version1, c.Secret
	case "2c":
		g.Version, g.Community = gosnmp.Version2c, c.Secret
	case "3":
		usm, flags, err := usmOf(c)
		if err != nil {
			return nil, nil, err
		}
		g.Version, g.SecurityModel, g.MsgFlags, g.SecurityParameters = gosnmp.Version3, gosnmp.UserSecurityModel, flags, usm
		if cn := c.Fields["context_name"]; cn != "" && g.ContextName == "" {
			g.ContextName = cn
		}
	}
	if err := g.Connect(); err != nil {
		return nil, nil, probe.Errorf(probe.CodeBadParams, "credential %s: %s", c.Name, param.Redact(err.Error(), param.Secrets([]probe.Credential{c})...))
	}
	g.Conn.Close()
	conn, err := target.Dialer(set)(ctx, "udp", ep.Addr())
	if err != nil {
		return nil, nil, target.DialError(ctx, ep.Addr(), err)
	}
	g.Conn = conn
	// cancellation cuts a wait at once (gosnmp only watches the deadline between tries)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(clock.Past) })
	return g, func() { stop(); conn.Close() }, nil
}

func usmOf(c probe.Credential) (*gosnmp.UsmSecurityParameters, gosnmp.SnmpV3MsgFlags, error) {
	f := c.Fields
	authPw := f["auth_password"]
	if authPw == "" {
		authPw = c.Secret
	}
	usm := &gosnmp.UsmSecurityParameters{UserName: c.Username, AuthenticationPassphrase: authPw, PrivacyPassphrase: f["priv_password"]}
	if c.Username == "" {
		return nil, 0, probe.Errorf(probe.CodeBadParams, "credential %s: SNMPv3 needs a username", c.Name)
	}
	var ok bool
	if usm.AuthenticationProtocol, ok = authProtocols[strings.ToUpper(or(f["auth_protocol"], map[bool]string{true: "SHA", false: "NONE"}[authPw != ""]))]; !ok {
		return nil, 0, probe.Errorf(probe.CodeBadParams, "credential %s: fields.auth_protocol %q: want MD5, SHA, SHA224, SHA256, SHA384 or SHA512", c.Name, f["auth_protocol"])
	}
	if usm.PrivacyProtocol, ok = privProtocols[strings.ToUpper(or(f["priv_protocol"], map[bool]string{true: "AES", false: "NONE"}[usm.PrivacyPassphrase != ""]))]; !ok {
		return nil, 0, probe.Errorf(probe.CodeBadParams, "credential %s: fields.priv_protocol %q: want DES, AES, AES192, AES256, AES192C or AES256C", c.Name, f["priv_protocol"])
	}
	flags := gosnmp.NoAuthNoPriv
	if usm.AuthenticationProtocol != gosnmp.NoAuth {
		flags = gosnmp.AuthNoPriv
		if usm.PrivacyProtocol != gosnmp.NoPriv {
			flags = gosnmp.AuthPriv
		}
	}
	switch strings.ToLower(f["security_level"]) {
	case "":
	case "noauthnopriv":
		flags = gosnmp.NoAuthNoPriv
	case "authnopriv":
		flags = gosnmp.AuthNoPriv
	case "authpriv":
		flags = gosnmp.AuthPriv
	default:
		return nil, 0, probe.Errorf(probe.CodeBadParams, "credential %s: fields.security_level %q: want noAuthNoPriv, authNoPriv or authPriv", c.Name, f["security_level"])
	}
	return usm, flags | gosnmp.Reportable, nil
}

var authProtocols = map[string]gosnmp.SnmpV3AuthProtocol{
	"NONE": gosnmp.NoAuth, "MD5": gosnmp.MD5, "SHA": gosnmp.SHA, "SHA1": gosnmp.SHA, "SHA224": gosnmp.SHA224,
	"SHA256": gosnmp.SHA256, "SHA384": gosnmp.SHA384, "SHA512": gosnmp.SHA512,
}

var privProtocols = map[string]gosnmp.SnmpV3PrivProtocol{
	"NONE": gosnmp.NoPriv, "DES": gosnmp.DES, "AES": gosnmp.AES, "AES128": gosnmp.AES, "AES192": gosnmp.AES192,
	"AES256": gosnmp.AES256, "AES192C": gosnmp.AES192C, "AES256C": gosnmp.AES256C,
}
