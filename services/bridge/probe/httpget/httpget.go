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

	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/certinfo"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/httpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// Config of http_get.
type Config struct {
	Timeout    time.Duration
	MaxTimeout time.Duration
	MaxBody    int // bytes read for the title
}

// Params of an http_get probe.
type Params struct {
	Scheme          string `json:"scheme,omitempty"` // http or https (default by port)
	Port            int    `json:"port,omitempty"`
	Path            string `json:"path,omitempty"`
	Host            string `json:"host,omitempty"` // Host header and TLS server name
	Timeout         string `json:"timeout,omitempty"`
	TLSVerify       bool   `json:"tls_verify,omitempty"`
	FollowRedirects int    `json:"follow_redirects,omitempty"`
	MaxBody         int    `json:"max_body,omitempty"`
}

// Result of an http_get probe.
type Result struct {
	URL             string              `json:"url"`
	Status          int                 `json:"status"`
	StatusText      string              `json:"status_text"`
	Proto           string              `json:"proto"`
	Server          string              `json:"server,omitempty"`
	Title           string              `json:"title,omitempty"`
	ContentType     string              `json:"content_type,omitempty"`
	ContentLength   int64               `json:"content_length"`
	Location        string              `json:"location,omitempty"`
	Headers         map[string][]string `json:"headers"`
	HeaderTruncated bool                `json:"headers_truncated,omitempty"`
	// BodyRead is how much of the body was read to find the title; BodyTruncated says the
	// body went on (its size is then ContentLength when the server said it, else unknown).
	BodyRead      int64         `json:"body_read"`
	BodyTruncated bool          `json:"body_truncated"`
	TLS           *certinfo.TLS `json:"tls,omitempty"`
	DurationMS    int64         `json:"duration_ms"`
}

type factory struct{}

// NewFactory returns the http_get kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Type() string       { return "http_get" }
func (factory) Capability() string { return "http" }
func (factory) DefaultConfig() any {
	return Config{Timeout: 10 * time.Second, MaxTimeout: 2 * time.Minute, MaxBody: 256 << 10}
}

func (factory) Schema() probe.Schema {
	return probe.Schema{
		Description: "GET a web page: status, headers, Server, title; certificate and verification for https.",
		Params: map[string]probe.Param{
			"scheme":           {Type: "string", Description: "http or https; default https on 443, 8443, 9443, 5986, else http"},
			"port":             {Type: "int", Description: "TCP port (or give target host:port)", Default: 80},
			"path":             {Type: "string", Description: "request path", Default: "/"},
			"host":             {Type: "string", Description: "Host header and TLS server name"},
			"timeout":          {Type: "duration", Description: "whole request", Default: "10s"},
			"tls_verify":       {Type: "bool", Description: "fail when the certificate does not verify (it is always reported)", Default: false},
			"follow_redirects": {Type: "int", Description: "redirects to follow (0-10)", Default: 0},
			"max_body":         {Type: "int", Description: "bytes of body read to find the title", Default: 65536},
		},
	}
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
