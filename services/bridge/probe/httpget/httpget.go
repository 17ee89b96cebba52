// Package httpget is the http_get probe kind, discovery's look at a web port: status,
// headers, Server, page title, and for https the certificate and whether it verifies.
// TLS verification is off by default (discovery meets self-signed certificates everywhere)
// but its outcome is always reported.
package httpget

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/httpget"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/certinfo"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/httpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/httpget): what a probe asks and what it answers.
type (
	Params = contract.Params
	Result = contract.Result
)

// Config of http_get.
type Config struct {
	Timeout    time.Duration `yaml:"timeout"`
	MaxTimeout time.Duration `yaml:"max_timeout"`
	MaxBody    int           `yaml:"max_body"` // bytes read for the title
}

type factory struct{}

// NewFactory returns the http_get kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{Timeout: 10 * time.Second, MaxTimeout: 2 * time.Minute, MaxBody: 256 << 10}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "http_get: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	timeout, err := param.Duration("timeout", p.Timeout, r.cfg.Timeout, r.cfg.MaxTimeout)
	if err != nil {
		return nil, err
	}
	if p.FollowRedirects < 0 || p.FollowRedirects > 10 {
		return nil, param.Bad("follow_redirects", "%d: want 0-10", p.FollowRedirects)
	}
	maxBody, err := param.Int("max_body", p.MaxBody, 64<<10, r.cfg.MaxBody)
	if err != nil {
		return nil, err
	}
	if p.Scheme != "" && p.Scheme != "http" && p.Scheme != "https" {
		return nil, param.Bad("scheme", "%s: want http or https", param.Quote(p.Scheme))
	}
	if p.Port != 0 {
		if _, err := param.Port("port", p.Port, 0); err != nil {
			return nil, err
		}
	}
	_, tport, err := target.Split(req.Target)
	if err != nil {
		return nil, err
	}
	port := p.Port
	if tport != 0 {
		port = tport
	}
	if port == 0 {
		port = map[string]int{"https": 443}[p.Scheme]
		if port == 0 {
			port = 80
		}
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	u, err := httpc.URL("", p.Scheme, ep.IP.String(), ep.Port, p.Path)
	if err != nil {
		return nil, param.Bad("path", "%v", err)
	}
	serverName := p.Host
	if serverName == "" && ep.IsName() {
		serverName = ep.Name
	}
	var tlsCfg *tls.Config
	if u.Scheme == "https" {
		tlsCfg = &tls.Config{InsecureSkipVerify: !p.TLSVerify, ServerName: serverName}
		if p.TLSVerify && serverName == "" {
			tlsCfg.ServerName = ep.IP.String()
		}
	}
	client := httpc.Client(r.set, httpc.Options{Timeout: timeout, Redirects: p.FollowRedirects, TLS: tlsCfg})
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, param.Bad("path", "%v", err)
	}
	if p.Host != "" {
		hreq.Host = p.Host
	}
	hreq.Header.Set("User-Agent", "outpost-bridge/1 (discovery)")
	hreq.Header.Set("Accept", "text/html,*/*;q=0.8")
	start := r.set.Time()
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, httpc.Error(ctx, u, err)
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, int64(maxBody)+1))
	if rerr != nil && len(body) == 0 && ctx.Err() != nil {
		return nil, httpc.Error(ctx, u, rerr)
	}
	res := Result{
		URL: httpc.Redacted(resp.Request.URL), Status: resp.StatusCode, StatusText: httpc.Reason(resp),
		Proto: resp.Proto, Server: resp.Header.Get("Server"), ContentType: resp.Header.Get("Content-Type"),
		ContentLength: resp.ContentLength, Location: resp.Header.Get("Location"),
	}
	res.Headers, res.HeaderTruncated = httpc.Headers(resp.Header)
	if len(body) > maxBody {
		body = body[:maxBody]
		res.BodyTruncated = true
	}
	res.BodyRead = int64(len(body))
	if ct := strings.ToLower(res.ContentType); ct == "" || strings.Contains(ct, "html") || strings.Contains(ct, "xml") {
		res.Title = httpc.Title(body)
	}
	if resp.TLS != nil {
		name := serverName
		if name == "" {
			name = ep.IP.String()
		}
		t := certinfo.State(*resp.TLS, name, nil, now(r.set), false)
		res.TLS = &t
	}
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}

func now(set probe.Settings) time.Time {
	return set.Time()
}
