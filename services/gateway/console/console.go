// Package console is the gateway's web console: server-rendered HTML pages over the
// gateway's own JSON API.
//
// The console holds no authority of its own. Every page calls the in-process API handler
// with the bearer token kept in the session cookie and the browser's remote address, so
// roles, validation, audit and errors are decided in exactly one place; a refusal of the API
// (403, 400, 409…) is shown in the page as the API worded it.
package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

//go:embed templates/*.html static/*
var assets embed.FS

// SessionCookie holds the random id of a signed-in browser's session (never the token).
const SessionCookie = "outpost_session"

// Sessions keep sign-ins on the server: the cookie only names one.
type Sessions interface {
	// Open starts a session for a verified token and returns its id.
	Open(ctx context.Context, token string) (string, error)
	// Resume returns the token hash of a live session, or ErrNoSession.
	Resume(ctx context.Context, id string) (string, error)
	// Close ends a session.
	Close(ctx context.Context, id string) error
	// TTL is how long a session lasts (the cookie's Max-Age).
	TTL() time.Duration
}

// ErrNoSession: the session is unknown, expired or ended.
var ErrNoSession = errors.New("no such session")

const flashCookie = "outpost_flash"

// Prefix is where the console's pages live; "/" redirects here.
const Prefix = "/console"

// Options configure the console.
type Options struct {
	// API is the gateway's JSON API handler (it must serve /api/v1/...).
	API     http.Handler
	Version string
	Logger  *slog.Logger
	// PollInterval is how often a live run page polls the API (default 500 ms).
	PollInterval time.Duration
	// Closing is closed when the server shuts down: live streams end then, rather than
	// holding the graceful shutdown until its timeout (browsers reconnect by themselves).
	Closing <-chan struct{}
	// Sessions keep sign-ins; AsSession marks an in-process API request as made by the
	// session whose token has that hash (the API's auth reads it).
	Sessions  Sessions
	AsSession func(ctx context.Context, tokenHash string) context.Context
}

// Console serves the pages.
type Console struct {
	closing  <-chan struct{}
	api      http.Handler
	sessions Sessions
	asSess   func(ctx context.Context, tokenHash string) context.Context
	version  string
	log      *slog.Logger
	poll     time.Duration
	pages    map[string]*template.Template
	mux      *http.ServeMux
}

// New builds the console handler; mount it at "/".
func New(o Options) http.Handler {
	if o.Sessions == nil || o.AsSession == nil {
		panic("console: Options.Sessions and Options.AsSession are required")
	}
	c := &Console{api: o.API, version: o.Version, log: o.Logger, poll: o.PollInterval, closing: o.Closing, pages: map[string]*template.Template{},
		sessions: o.Sessions, asSess: o.AsSession}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "console")
	if c.poll <= 0 {
		c.poll = 500 * time.Millisecond
	}
	if c.version == "" {
		c.version = "dev"
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		c.pages[base] = template.Must(template.New(base).Funcs(funcs).ParseFS(assets, "templates/layout.html", n))
	}
	c.routes()
	return c
}

func (c *Console) routes() {
	m := http.NewServeMux()
	c.mux = m
	static, _ := fs.Sub(assets, "static")
	files := http.FileServerFS(static)
	m.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix+"/static", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Asset URLs carry ?v=<version>, so a new build is fetched at once.
		w.Header().Set("Cache-Control", "public, max-age=86400")
		files.ServeHTTP(w, r)
	})))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	})
	m.HandleFunc("GET "+Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	})
	m.HandleFunc("GET "+Prefix+"/signin", c.signinPage)
	m.HandleFunc("POST "+Prefix+"/signin", c.signin)
	m.HandleFunc("POST "+Prefix+"/signout", c.signout)

	auth := func(pattern string, h http.HandlerFunc) { m.Handle(pattern, c.session(h)) }
	auth("GET "+Prefix+"/{$}", c.dashboard)
	auth("GET "+Prefix+"/agents", c.agents)
	auth("POST "+Prefix+"/agents/{agent}/{action}", c.agentAction)
	auth("GET "+Prefix+"/sites", c.sites)
	auth("POST "+Prefix+"/sites", c.siteAdd)
	auth("POST "+Prefix+"/credentials", c.credentialAdd)
	auth("POST "+Prefix+"/credentials/{name}/delete", c.credentialRemove)
	auth("GET "+Prefix+"/discovery", c.discovery)
	auth("POST "+Prefix+"/discovery", c.discoveryStart)
	auth("GET "+Prefix+"/discovery/runs/{id}", c.run)
	auth("GET "+Prefix+"/discovery/runs/{id}/events", c.runEvents)
	auth("POST "+Prefix+"/discovery/runs/{id}/cancel", c.runCancel)
	auth("GET "+Prefix+"/cis", c.cis)
	auth("GET "+Prefix+"/cis/{id}", c.ci)
	auth("GET "+Prefix+"/dlq", c.dlq)
	auth("GET "+Prefix+"/imports", c.imports)
	auth("GET "+Prefix+"/imports/runs/{id}", c.importRun)
	auth("GET "+Prefix+"/imports/runs/{id}/events", c.importRunEvents)
	auth("GET "+Prefix+"/services", c.services)
	auth("GET "+Prefix+"/services/{name}", c.service)
	auth("GET "+Prefix+"/workflows", c.workflows)
	auth("GET "+Prefix+"/workflows/{name}", c.workflow)
	auth("GET "+Prefix+"/workflow-runs/{id}", c.workflowRun)
	auth("GET "+Prefix+"/workflow-runs/{id}/events", c.workflowRunEvents)
	auth("POST "+Prefix+"/workflow-runs/{id}/cancel", c.workflowRunCancel)
	auth("POST "+Prefix+"/workflow-runs/{id}/steps/{step}/approve", c.workflowApprove)
	auth("GET "+Prefix+"/alerts", c.alerts)
	auth("GET "+Prefix+"/alerts/events", c.alertsEvents)
	auth("GET "+Prefix+"/alerts/{id}", c.alert)
	auth("POST "+Prefix+"/alerts/{id}/{action}", c.alertAction)
	auth("GET "+Prefix+"/silences", c.silences)
	auth("POST "+Prefix+"/silences", c.silenceAdd)
	auth("POST "+Prefix+"/silences/{id}/delete", c.silenceRemove)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, http.StatusNotFound, "error", &page{Title: "Not found", Errors: []string{"There is no page at " + r.URL.Path + "."}})
	})
}

// ServeHTTP applies the headers every page carries and refuses cross-site writes.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := sameOrigin(r); err != nil {
			c.log.Warn("cross-origin write refused", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			c.render(w, r, http.StatusForbidden, "error", &page{Title: "Refused", Errors: []string{
				"This form was not sent from this console (" + err.Error() + "). Reload the page and try again."}})
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// sameOrigin is the CSRF check: a write must come from a page of this host, said by its
// Origin header or, when a browser sends none, its Referer. A request with neither is
// refused: every browser sends one of them on a form POST.
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("Sec-Fetch-Site is %s", site)
	}
	from := r.Header.Get("Origin")
	what := "Origin"
	if from == "" || from == "null" {
		from, what = r.Header.Get("Referer"), "Referer"
	}
	if from == "" {
		return errors.New("no Origin or Referer header")
	}
	u, err := url.Parse(from)
	if err != nil || u.Host == "" {
		return fmt.Errorf("unreadable %s %q", what, from)
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("%s %s is not %s", what, u.Host, r.Host)
	}
	return nil
}

// tokenKey holds the signed-in session's token hash, sessionIDKey its id.
type (
	tokenKey     struct{}
	sessionIDKey struct{}
)

// session admits requests with a live session; others are sent to sign in.
func (c *Console) session(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(SessionCookie)
		if err != nil || ck.Value == "" {
			c.toSignin(w, r)
			return
		}
		h, err := c.sessions.Resume(r.Context(), ck.Value)
		if errors.Is(err, ErrNoSession) {
			clearCookie(w, r, SessionCookie)
			c.toSignin(w, r)
			return
		}
		if err != nil {
			c.render(w, r, http.StatusServiceUnavailable, "error", &page{Title: "Unavailable", Errors: []string{
				"Your session could not be checked (" + err.Error() + "). Try again in a moment."}})
			return
		}
		ctx := context.WithValue(context.WithValue(r.Context(), tokenKey{}, h), sessionIDKey{}, ck.Value)
		next(w, r.WithContext(ctx))
	})
}

func (c *Console) toSignin(w http.ResponseWriter, r *http.Request) {
	target := Prefix + "/signin"
	if r.Method == http.MethodGet && r.URL.Path != Prefix+"/" {
		target += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// APIError is a refusal or failure of the API, from its problem document.
type APIError struct {
	Status int
	Title  string
	Detail string
}

func (e *APIError) Error() string {
	if e.Detail == "" {
		return e.Title
	}
	return e.Title + ": " + e.Detail
}

// errSignedOut means the session's token no longer works (revoked, or the hub was reset).
var errSignedOut = errors.New("session token refused")

// call runs one API request in-process as the signed-in user and decodes the answer into
// out (when not nil).
func (c *Console) call(r *http.Request, method, path string, body, out any) error {
	h, _ := r.Context().Value(tokenKey{}).(string)
	return c.do(r, func(req *http.Request) *http.Request { return req.WithContext(c.asSess(req.Context(), h)) }, method, path, body, out)
}

// callAs runs one API request with a bearer token (signing in, before there is a session).
func (c *Console) callAs(r *http.Request, token, method, path string, body, out any) error {
	return c.do(r, func(req *http.Request) *http.Request {
		req.Header.Set("Authorization", "Bearer "+token)
		return req
	}, method, path, body, out)
}

func (c *Console) do(r *http.Request, authorize func(*http.Request) *http.Request, method, path string, body, out any) error {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, rd)
	if err != nil {
		return err
	}
	// The audit records the browser's address, and the API sees the host it was asked on.
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req = authorize(req)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if ua := r.UserAgent(); ua != "" {
		req.Header.Set("User-Agent", ua+" (outpost console)")
	}
	rec := &recorder{header: http.Header{}}
	c.api.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 400 {
		e := &APIError{Status: rec.code}
		var p gatewayapi.Problem
		if json.Unmarshal(rec.body.Bytes(), &p) == nil && p.Title != "" {
			e.Title, e.Detail = p.Title, p.Detail
		} else {
			e.Title = http.StatusText(rec.code)
		}
		return e
	}
	if out != nil {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return nil
}

// recorder is the in-process response of an API call.
type recorder struct {
	code   int
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// fetches runs API calls concurrently: a page needing several answers waits for the
// slowest, not their sum.
type fetches struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (f *fetches) get(c *Console, r *http.Request, path string, out any) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := c.call(r, http.MethodGet, path, nil, out); err != nil {
			f.mu.Lock()
			f.errs = append(f.errs, err)
			f.mu.Unlock()
		}
	}()
}

func (f *fetches) wait() []error {
	f.wg.Wait()
	return f.errs
}

// page is what the layout renders around a page's own data.
type page struct {
	Title   string
	Nav     string
	Version string
	Flash   string
	Errors  []string
	// Status is the API status behind the first error (403 shows the role message).
	Status   int
	SignedIn bool
	// User is the signed-in token's name and role (nil when it could not be read).
	User *gatewayapi.Identity
	Data any
}

// roleRank orders the API's roles: a role may do what any lower one may.
var roleRank = map[string]int{"viewer": 1, "operator": 2, "admin": 3}

// Can says whether the signed-in role may do what needs role: pages offer only the
// actions the API would allow. Unknown identity offers everything — the API still decides.
func (p *page) Can(role string) bool {
	return p.User == nil || roleRank[p.User.Role] >= roleRank[role]
}

// addErrs records API errors to show at the top of the page; it reports whether the
// session is gone (the caller then sends the browser to sign in).
func (p *page) addErrs(errs ...error) (signedOut bool) {
	for _, err := range errs {
		if err == nil {
			continue
		}
		var ae *APIError
		if errors.As(err, &ae) {
			if ae.Status == http.StatusUnauthorized {
				return true
			}
			if p.Status == 0 {
				p.Status = ae.Status
			}
		}
		if msg := err.Error(); !slices.Contains(p.Errors, msg) {
			p.Errors = append(p.Errors, msg)
		}
	}
	return false
}

// show renders a page after its API calls; a refused session token signs the browser out.
func (c *Console) show(w http.ResponseWriter, r *http.Request, status int, name string, p *page, errs ...error) {
	if p.addErrs(errs...) {
		c.endSession(w, r)
		c.toSignin(w, r)
		return
	}
	c.render(w, r, status, name, p)
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, p *page) {
	t, ok := c.pages[name]
	if !ok {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	p.Version = c.version
	if _, ok := r.Context().Value(tokenKey{}).(string); ok {
		p.SignedIn = true
		var id gatewayapi.Identity
		if p.User == nil && c.call(r, http.MethodGet, "/api/v1/whoami", nil, &id) == nil {
			p.User = &id
		}
	}
	if ck, err := r.Cookie(flashCookie); err == nil && r.Method == http.MethodGet {
		if msg, err := url.QueryUnescape(ck.Value); err == nil {
			p.Flash = msg
		}
		clearCookie(w, r, flashCookie)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// done redirects after a successful write, with a message for the next page.
func done(w http.ResponseWriter, r *http.Request, to, msg string) {
	http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: Prefix, MaxAge: 60,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	http.Redirect(w, r, to, http.StatusSeeOther)
}

func clearCookie(w http.ResponseWriter, r *http.Request, name string) {
	path := "/"
	if name == flashCookie {
		path = Prefix
	}
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: path, MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// statusOf is the HTTP status of a page whose write the API refused.
func statusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return http.StatusBadGateway
}
