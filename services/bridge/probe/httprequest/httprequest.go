// Package httprequest is the http_request probe kind: one HTTP request to a site system
// (a REST API, a webhook) with method, headers, body and TLS options, for import and
// orchestration steps. The response body is returned up to a cap, with its size and a
// truncated flag. Credentials (type http, and only http: a stored SSH, SNMP, SQL or LDAP
// secret is refused) are tried in order while the server answers 401/403: basic auth
// (username + secret), a bearer token (fields.scheme "bearer") or any header
// (fields.scheme "header", fields.header_name its name). A credential goes only over
// verified TLS, and never follows a redirect to another host, unless the credential
// allows it (allow_insecure, set by an admin).
package httprequest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/certinfo"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/httpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/httprequest): what a probe asks and what it answers.
type (
	TLSParams = contract.TLSParams
	Params    = contract.Params
	Result    = contract.Result
)

// Config of http_request.
type Config struct {
	Timeout    time.Duration `yaml:"timeout"`     // default
	MaxTimeout time.Duration `yaml:"max_timeout"` // 30 s
	MaxBody    int           `yaml:"max_body"`    // response bytes kept (bounded by the chunk size too)
	MaxRequest int           `yaml:"max_request"` // request body bytes
}

// drainLimit is how far past the cap a body is read only to learn its size.
const drainLimit = 8 << 20

var methods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

type factory struct{}

// NewFactory returns the http_request kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Timeout: 30 * time.Second, MaxTimeout: 30 * time.Second, MaxBody: 4 << 20, MaxRequest: 4 << 20}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "http_request: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	if err := probe.CheckCredentials("http_request", req.Credentials); err != nil {
		return nil, err
	}
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	method := strings.ToUpper(p.Method)
	if method == "" {
		method = "GET"
	}
	if !slices.Contains(methods, method) {
		return nil, param.Bad("method", "%s: want one of %s", param.Quote(p.Method), strings.Join(methods, " "))
	}
	timeout, err := param.Duration("timeout", p.Timeout, r.cfg.Timeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	if p.FollowRedirects < 0 || p.FollowRedirects > 10 {
		return nil, param.Bad("follow_redirects", "%d: want 0-10", p.FollowRedirects)
	}
	maxBody, err := param.Int("max_body", p.MaxBody, min(1<<20, r.cfg.MaxBody), r.cfg.MaxBody)
	if err != nil {
		return nil, err
	}
	maxBody = min(maxBody, capture.Limit(r.set.MaxOutput)*2/5) // escaped text (≤ 2×) must fit in a chunk with the headers
	body := []byte(p.Body)
	if p.BodyBase64 != "" {
		if p.Body != "" {
			return nil, param.Bad("body_base64", "give body or body_base64, not both")
		}
		if body, err = base64.StdEncoding.DecodeString(p.BodyBase64); err != nil {
			return nil, param.Bad("body_base64", "not base64: %v", err)
		}
	}
	if len(body) > r.cfg.MaxRequest {
		return nil, param.Bad("body", "%d bytes is beyond the %d-byte limit", len(body), r.cfg.MaxRequest)
	}
	for k, v := range p.Headers {
		if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n") {
			return nil, param.Bad("headers", "%s is not a valid header", param.Quote(k))
		}
	}
	tlsCfg, err := tlsConfig(p.TLS)
	if err != nil {
		return nil, err
	}

	// where to connect: the URL's host or the target; both must be allowed
	var u *url.URL
	if p.URL != "" {
		if u, err = httpc.URL(p.URL, "", "", 0, ""); err != nil {
			return nil, param.Bad("url", "%v", err)
		}
		port := 80
		if u.Scheme == "https" {
			port = 443
		}
		if _, err := target.Resolve(ctx, r.set, u.Host, port); err != nil {
			return nil, err
		}
	} else {
		if p.Scheme != "" && p.Scheme != "http" && p.Scheme != "https" {
			return nil, param.Bad("scheme", "%s: want http or https", param.Quote(p.Scheme))
		}
		port, err := param.Port("port", p.Port, 0)
		if err != nil {
			return nil, err
		}
		_, tport, err := target.Split(req.Target)
		if err != nil {
			return nil, err
		}
		if tport != 0 {
			port = tport
		}
		if port == 0 {
			port = map[string]int{"https": 443, "": 80, "http": 80}[p.Scheme]
		}
		ep, err := target.Resolve(ctx, r.set, req.Target, port)
		if err != nil {
			return nil, err
		}
		host := ep.IP.String()
		if ep.IsName() {
			host = ep.Name
		}
		if u, err = httpc.URL("", p.Scheme, host, ep.Port, p.Path); err != nil {
			return nil, param.Bad("path", "%v", err)
		}
	}
	if u.Scheme == "https" && tlsCfg.ServerName == "" && !isIP(u.Hostname()) {
		tlsCfg.ServerName = u.Hostname()
	}
	if err := secureEnough(req.Credentials, u, tlsCfg); err != nil {
		return nil, err
	}
	opts := httpc.Options{Timeout: timeout, Redirects: p.FollowRedirects, TLS: tlsCfg}
	if len(req.Credentials) > 0 {
		opts.CheckRedirect = func(next *http.Request) error {
			if next.URL.Host != u.Host {
				return probe.Errorf(probe.CodeDenied, "%s redirects to %s: a credential is never sent to another host; not followed", httpc.Redacted(u), httpc.Redacted(next.URL))
			}
			return secureEnough(req.Credentials, next.URL, tlsCfg)
		}
	}
	client := httpc.Client(r.set, opts)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	secrets := param.Secrets(req.Credentials)

	creds := req.Credentials
	if len(creds) == 0 {
		creds = []probe.Credential{{}} // anonymous
	}
	res := Result{Method: method}
	start := r.set.Time()
	for i, c := range creds {
		hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
		if err != nil {
			return nil, param.Bad("url", "%v", err)
		}
		for k, v := range p.Headers {
			hreq.Header.Set(k, v)
		}
		if hreq.Header.Get("User-Agent") == "" {
			hreq.Header.Set("User-Agent", "outpost-bridge/1")
		}
		if c.Name != "" || c.Secret != "" {
			if err := authorize(hreq, c); err != nil {
				return nil, err
			}
		}
		resp, err := client.Do(hreq)
		if err != nil {
			var refused *probe.Error
			if errors.As(err, &refused) && refused.Code == probe.CodeDenied {
				return nil, refused
			}
			e := httpc.Error(ctx, u, err)
			if pe, ok := e.(*probe.Error); ok {
				pe.Message = param.Redact(pe.Message, secrets...)
			}
			return nil, e
		}
		if (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && c.Name != "" {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			res.FailedCredentials = append(res.FailedCredentials, c.Name)
			if i < len(creds)-1 {
				continue
			}
			return nil, probe.Errorf(probe.CodeAuth, "%s answered %d to every credential (%s)", httpc.Redacted(u), resp.StatusCode, strings.Join(res.FailedCredentials, ", "))
		}
		buf := capture.NewBuffer(maxBody)
		_, rerr := io.Copy(buf, io.LimitReader(resp.Body, int64(maxBody)+drainLimit))
		more := false
		if rerr == nil {
			// drained up to drainLimit past the cap to learn the size; beyond that it is a lower bound
			var one [1]byte
			n, _ := resp.Body.Read(one[:])
			more = n > 0
		}
		resp.Body.Close()
		if rerr != nil && ctx.Err() != nil && buf.Len() == 0 {
			return nil, httpc.Error(ctx, u, rerr)
		}
		res.URL = httpc.Redacted(resp.Request.URL)
		res.Status, res.StatusText, res.Proto = resp.StatusCode, httpc.Reason(resp), resp.Proto
		res.Headers, res.HeadersTruncated = httpc.Headers(resp.Header)
		for k, vs := range res.Headers {
			for j := range vs {
				vs[j] = param.Redact(vs[j], secrets...)
			}
			res.Headers[k] = vs
		}
		res.ContentType = resp.Header.Get("Content-Type")
		res.Body = capture.Make([]byte(param.Redact(string(buf.Bytes()), secrets...)), buf.Len(), more || (rerr != nil))
		res.Credential = c.Name
		if resp.TLS != nil {
			t := certinfo.State(*resp.TLS, u.Hostname(), tlsCfg.RootCAs, r.set.Time(), false)
			res.TLS = &t
		}
		break
	}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

// secureEnough refuses to send credentials over plaintext http or TLS without certificate
// verification unless each allows it: a credential sent to a server an operator picked is
// as good as read back if anyone on the path can read or intercept it.
func secureEnough(creds []probe.Credential, u *url.URL, tlsCfg *tls.Config) error {
	if len(creds) == 0 {
		return nil
	}
	if u.Scheme != "https" {
		return probe.RequireSecure(creds, "plaintext http ("+httpc.Redacted(u)+")")
	}
	if tlsCfg.InsecureSkipVerify {
		return probe.RequireSecure(creds, "TLS without certificate verification (tls.insecure_skip_verify)")
	}
	return nil
}

func isIP(h string) bool {
	_, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil
}

func tlsConfig(t TLSParams) (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: t.InsecureSkipVerify, ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	switch t.MinVersion {
	case "", "1.2":
	case "1.3":
		c.MinVersion = tls.VersionTLS13
	default:
		return nil, param.Bad("tls.min_version", "%s: want 1.2 or 1.3", param.Quote(t.MinVersion))
	}
	if t.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(t.CAPEM)) {
			return nil, param.Bad("tls.ca_pem", "no PEM certificate in it")
		}
		c.RootCAs = pool
	}
	return c, nil
}

func authorize(r *http.Request, c probe.Credential) error {
	switch strings.ToLower(c.Fields["scheme"]) {
	case "", "basic":
		if c.Username == "" {
			r.Header.Set("Authorization", "Bearer "+c.Secret)
			return nil
		}
		r.SetBasicAuth(c.Username, c.Secret)
	case "bearer":
		r.Header.Set("Authorization", "Bearer "+c.Secret)
	case "header":
		h := c.Fields["header_name"]
		if h == "" {
			h = c.Fields["header"] // the name it had before header_name
		}
		if h == "" || strings.ContainsAny(h, " :\r\n") {
			return probe.Errorf(probe.CodeBadParams, "credential %s: fields.header_name must name a header", c.Name)
		}
		r.Header.Set(h, c.Secret)
	default:
		return probe.Errorf(probe.CodeBadParams, "credential %s: fields.scheme %q: want basic, bearer or header", c.Name, c.Fields["scheme"])
	}
	return nil
}
