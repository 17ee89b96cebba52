// Package ldapsearch is the ldap_search probe kind: bind (simple, with the first
// credential that works — type ldap: Username is the bind DN, Secret the password — or
// anonymously) over ldap, ldaps or StartTLS, then search with base DN, scope, filter and
// attributes, paged (RFC 2696). Entries are streamed through Emit a page at a time; the
// final data is a summary. With base_dn "" and scope base it reads the root DSE.
//
// A bind credential goes only over verified TLS: with a credential, security defaults to
// StartTLS (LDAPS on 636) and the server's certificate must verify (against ca_pem, or the
// system's roots) before the bind is sent. Plaintext or an unverified certificate needs
// allow_insecure on the credential. Anonymous reads (the root DSE) keep plain LDAP.
package ldapsearch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/ldapsearch"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/certinfo"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/ldapsearch): what a probe asks and what it answers.
type (
	Params = contract.Params
	Entry  = contract.Entry
	Page   = contract.Page
	Result = contract.Result
)

// Config of ldap_search.
type Config struct {
	Timeout    time.Duration `yaml:"timeout"`
	MaxTimeout time.Duration `yaml:"max_timeout"`
	MaxEntries int           `yaml:"max_entries"` // hard cap of max_entries
}

type factory struct{}

// NewFactory returns the ldap_search kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Timeout: 30 * time.Second, MaxTimeout: 10 * time.Minute, MaxEntries: 1_000_000}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "ldap_search: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

var scopes = map[string]int{"base": ldap.ScopeBaseObject, "one": ldap.ScopeSingleLevel, "onelevel": ldap.ScopeSingleLevel, "sub": ldap.ScopeWholeSubtree, "subtree": ldap.ScopeWholeSubtree}

func (r *runner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	if err := probe.CheckCredentials("ldap_search", req.Credentials); err != nil {
		return nil, err
	}
	creds := req.Credentials
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	var roots *x509.CertPool
	if p.CAPEM != "" {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM([]byte(p.CAPEM)) {
			return nil, param.Bad("ca_pem", "no PEM certificate in it")
		}
	}
	sec := strings.ToLower(p.Security)
	switch sec {
	case "":
		sec = "none"
		if len(creds) > 0 {
			sec = "starttls" // a bind never goes in clear by default
		}
		if p.Port == 636 {
			sec = "ldaps"
		}
	case "none", "ldaps", "starttls":
	default:
		return nil, param.Bad("security", "%s: want none, ldaps or starttls", param.Quote(p.Security))
	}
	port, err := param.Port("port", p.Port, map[bool]int{true: 636, false: 389}[sec == "ldaps"])
	if err != nil {
		return nil, err
	}
	scopeName := strings.ToLower(p.Scope)
	if scopeName == "" {
		scopeName = "sub"
	}
	scope, ok := scopes[scopeName]
	if !ok {
		return nil, param.Bad("scope", "%s: want base, one or sub", param.Quote(p.Scope))
	}
	filter := p.Filter
	if filter == "" {
		filter = "(objectClass=*)"
	}
	if _, err := ldap.CompileFilter(filter); err != nil {
		return nil, param.Bad("filter", "%s: %v", param.Quote(filter), err)
	}
	pageSize := 500
	if p.PageSize != nil {
		if *p.PageSize < 0 || *p.PageSize > 10_000 {
			return nil, param.Bad("page_size", "%d: want 0-10000", *p.PageSize)
		}
		pageSize = *p.PageSize
	}
	maxEntries, err := param.Int("max_entries", p.MaxEntries, min(100_000, r.cfg.MaxEntries), r.cfg.MaxEntries)
	if err != nil {
		return nil, err
	}
	timeout, err := param.Duration("timeout", p.Timeout, r.cfg.Timeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	for i, a := range p.Attributes {
		if a == "" || strings.ContainsAny(a, " ()=,") {
			return nil, param.Bad(fmt.Sprintf("attributes[%d]", i), "%s is not an attribute name", param.Quote(a))
		}
	}
	// With a credential, the certificate must verify before the bind, unless every
	// credential allows otherwise; plaintext is refused before connecting.
	mustVerify := p.TLSVerify
	if len(creds) > 0 {
		if sec == "none" {
			if err := probe.RequireSecure(creds, "LDAP without TLS (security none; use starttls or ldaps)"); err != nil {
				return nil, err
			}
		} else if probe.RequireSecure(creds, "") != nil {
			mustVerify = true
		}
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	secrets := param.Secrets(creds)
	start := r.set.Time()
	res := &Result{IP: ep.IP.String(), Port: ep.Port, Security: sec, Scope: scopeName, Filter: filter, FailedCredentials: []string{}}

	// connect
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := target.Dialer(r.set)(cctx, "tcp", ep.Addr())
	if err != nil {
		return nil, target.DialError(cctx, ep.Addr(), err)
	}
	serverName := p.ServerName
	if serverName == "" && ep.IsName() {
		serverName = ep.Name
	}
	tlsCfg := &tls.Config{InsecureSkipVerify: true, ServerName: serverName}
	verifyName := serverName
	if verifyName == "" {
		verifyName = ep.IP.String()
	}
	var conn *ldap.Conn
	if sec == "ldaps" {
		tc := tls.Client(raw, tlsCfg)
		if err := tc.HandshakeContext(cctx); err != nil {
			raw.Close()
			return nil, tlsError(ctx, cctx, ep, err)
		}
		t := certinfo.State(tc.ConnectionState(), verifyName, roots, now(r.set), false)
		res.TLS = &t
		conn = ldap.NewConn(tc, true)
	} else {
		conn = ldap.NewConn(raw, false)
	}
	conn.Start()
	conn.SetTimeout(timeout)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if sec == "starttls" {
		if err := conn.StartTLS(tlsCfg); err != nil {
			return nil, r.ldapError(ctx, ep, "StartTLS", err, secrets)
		}
		if cs, ok := conn.TLSConnectionState(); ok {
			t := certinfo.State(cs, verifyName, roots, now(r.set), false)
			res.TLS = &t
		}
	}
	if mustVerify && res.TLS != nil && !res.TLS.Verified {
		if !p.TLSVerify {
			// the credential's rule, not the caller's: say so, and that nothing was sent
			return nil, probe.RequireSecure(creds, fmt.Sprintf("TLS to %s whose certificate does not verify (%s; give ca_pem)", ep.Addr(), res.TLS.VerifyError))
		}
		return nil, probe.Errorf(probe.CodeProtocol, "%s: certificate not trusted: %s", ep.Addr(), res.TLS.VerifyError)
	}
	if p.TLSVerify && res.TLS == nil {
		return nil, param.Bad("tls_verify", "needs security ldaps or starttls")
	}

	// bind with the first credential that works
	for _, c := range creds {
		err := conn.Bind(c.Username, c.Secret)
		if err == nil {
			res.Credential, res.BindDN = c.Name, c.Username
			break
		}
		if ldap.IsErrorAnyOf(err, ldap.LDAPResultInvalidCredentials, ldap.LDAPResultUnwillingToPerform, ldap.LDAPResultInappropriateAuthentication,
			ldap.LDAPResultInsufficientAccessRights, ldap.LDAPResultConfidentialityRequired, ldap.LDAPResultStrongAuthRequired) {
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			if r.set.Logger != nil {
				r.set.Logger.Debug("ldap bind refused", "target", ep.Addr(), "credential", c)
			}
			continue
		}
		return nil, r.ldapError(ctx, ep, "bind", err, secrets)
	}
	if len(creds) > 0 && res.Credential == "" {
		return nil, probe.Errorf(probe.CodeAuth, "%s refused every credential (%s)", ep.Addr(), strings.Join(res.FailedCredentials, ", "))
	}

	// base DN: given, or the naming context of the root DSE
	base := ""
	if p.BaseDN != nil {
		base = *p.BaseDN
	} else {
		rs, err := conn.Search(ldap.NewSearchRequest("", ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, int(timeout.Seconds()), false,
			"(objectClass=*)", []string{"defaultNamingContext", "namingContexts"}, nil))
		if err != nil {
			return nil, r.ldapError(ctx, ep, "reading the root DSE", err, secrets)
		}
		if len(rs.Entries) > 0 {
			base = rs.Entries[0].GetAttributeValue("defaultNamingContext")
			if base == "" {
				base = rs.Entries[0].GetAttributeValue("namingContexts")
			}
		}
	}
	res.BaseDN = base
	if scope == ldap.ScopeBaseObject {
		pageSize = 0 // a base search returns one entry; some servers refuse paging of the root DSE
	}

	limit := capture.Limit(r.set.MaxOutput)
	var paging *ldap.ControlPaging
	if pageSize > 0 {
		paging = ldap.NewControlPaging(uint32(pageSize))
	}
	var stored []Entry
	storedBytes := 0
	for {
		var controls []ldap.Control
		if paging != nil {
			controls = []ldap.Control{paging}
		}
		sr := ldap.NewSearchRequest(base, scope, ldap.NeverDerefAliases, 0, int(timeout.Seconds()), false, filter, []string(p.Attributes), controls)
		rs, err := conn.Search(sr)
		sizeExceeded := err != nil && ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded)
		if err != nil && !sizeExceeded {
			return nil, r.ldapError(ctx, ep, "search", err, secrets)
		}
		entries := make([]Entry, 0, len(rs.Entries))
		for _, e := range rs.Entries {
			if res.Entries >= maxEntries {
				res.Truncated = true
				break
			}
			entries = append(entries, convert(e))
			res.Entries++
		}
		if sizeExceeded {
			res.Truncated = true
		}
		// pages stay within a chunk
		for len(entries) > 0 {
			n, size := 0, 0
			for n < len(entries) {
				s := entrySize(entries[n])
				if n > 0 && size+s > limit*3/4 {
					break
				}
				size += s
				n++
			}
			part := entries[:n]
			entries = entries[n:]
			if emit == nil {
				if storedBytes+size > limit*3/4 {
					res.Truncated = true
					entries = nil
					break
				}
				stored = append(stored, part...)
				storedBytes += size
			} else if err := emit(ctx, Page{Page: res.Pages, Entries: part}); err != nil {
				return nil, err
			}
			res.Pages++
		}
		if res.Truncated || paging == nil {
			break
		}
		ctrl, _ := ldap.FindControl(rs.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if ctrl == nil || len(ctrl.Cookie) == 0 {
			break
		}
		paging.SetCookie(ctrl.Cookie)
	}
	res.Results = stored
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

func convert(e *ldap.Entry) Entry {
	out := Entry{DN: strings.ToValidUTF8(e.DN, "\uFFFD"), Attributes: map[string][]string{}}
	for _, a := range e.Attributes {
		for _, raw := range a.ByteValues {
			s, bin, cut := Value(a.Name, raw)
			out.Attributes[a.Name] = append(out.Attributes[a.Name], s)
			if bin && !slices.Contains(out.Binary, a.Name) {
				out.Binary = append(out.Binary, a.Name)
			}
			out.Truncated = out.Truncated || cut
		}
	}
	return out
}

func entrySize(e Entry) int {
	n := len(e.DN) + 40
	for k, vs := range e.Attributes {
		n += len(k) + 8
		for _, v := range vs {
			n += len(v) + 4
		}
	}
	return n
}

func now(set probe.Settings) time.Time {
	return set.Time()
}

func tlsError(ctx, cctx context.Context, ep target.Endpoint, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case cctx.Err() != nil || target.IsTimeout(err):
		return probe.Errorf(probe.CodeTimeout, "%s: no TLS handshake in time", ep.Addr())
	}
	return probe.Errorf(probe.CodeProtocol, "%s: TLS handshake failed: %v", ep.Addr(), err)
}

func (r *runner) ldapError(ctx context.Context, ep target.Endpoint, what string, err error, secrets []string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := param.Redact(err.Error(), secrets...)
	var le *ldap.Error
	if errors.As(err, &le) {
		switch le.ResultCode {
		case ldap.ErrorNetwork:
			if strings.Contains(msg, "timed out") || target.IsTimeout(le.Err) {
				return probe.Errorf(probe.CodeTimeout, "%s: %s: no answer in time", ep.Addr(), what)
			}
			return probe.Errorf(probe.CodeProtocol, "%s: %s: %s (not an LDAP server?)", ep.Addr(), what, msg)
		case ldap.LDAPResultInappropriateAuthentication, ldap.LDAPResultInsufficientAccessRights, ldap.LDAPResultInvalidCredentials,
			ldap.LDAPResultStrongAuthRequired, ldap.LDAPResultConfidentialityRequired:
			return probe.Errorf(probe.CodeAuth, "%s: %s: %s", ep.Addr(), what, msg)
		case ldap.LDAPResultNoSuchObject:
			return probe.Errorf(probe.CodeBadParams, "params.base_dn: %s: %s", ep.Addr(), msg)
		case ldap.LDAPResultProtocolError, ldap.ErrorUnexpectedResponse, ldap.ErrorUnexpectedMessage:
			return probe.Errorf(probe.CodeProtocol, "%s: %s: %s", ep.Addr(), what, msg)
		case ldap.LDAPResultUnavailableCriticalExtension, ldap.LDAPResultUnwillingToPerform:
			return probe.Errorf(probe.CodeUnsupported, "%s: %s: %s", ep.Addr(), what, msg)
		}
	}
	if target.IsTimeout(err) {
		return probe.Errorf(probe.CodeTimeout, "%s: %s: no answer in time", ep.Addr(), what)
	}
	return probe.Errorf(probe.CodeProtocol, "%s: %s: %s", ep.Addr(), what, msg)
}
