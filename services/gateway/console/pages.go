package console

import (
	"cmp"
	"context"
	"errors"
	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// --- sign-in ---

type signinData struct {
	Next  string
	Error string
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "signin", &page{Title: "Sign in", Data: signinData{Next: safeNext(r.URL.Query().Get("next"))}})
}

// signin checks the pasted token against the API (GET /api/v1/status) before keeping it.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	fail := func(status int, msg string) {
		c.render(w, r, status, "signin", &page{Title: "Sign in", Data: signinData{Next: next, Error: msg}})
	}
	if tok == "" {
		fail(http.StatusBadRequest, "Paste an API token. `outpost up` wrote an admin token to <data>/admin.token; `outpost tokens create` makes others.")
		return
	}
	if err := c.callAs(r, tok, http.MethodGet, "/api/v1/status", nil, nil); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
			fail(http.StatusUnauthorized, "That token is unknown or revoked: check that you pasted all of it.")
			return
		}
		fail(statusOf(err), "The token could not be checked: "+err.Error())
		return
	}
	id, err := c.sessions.Open(r.Context(), tok)
	if err != nil {
		fail(http.StatusServiceUnavailable, "The session could not be started: "+err.Error())
		return
	}
	// The cookie names a server-side session and lasts as long as it: it never carries the
	// token, is sent only over TLS when the console is served over TLS, and never cross-site.
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil, MaxAge: int(c.sessions.TTL() / time.Second)})
	c.log.Info("console sign-in", "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(SessionCookie); err == nil {
		r = r.WithContext(context.WithValue(r.Context(), sessionIDKey{}, ck.Value))
	}
	c.endSession(w, r)
	http.Redirect(w, r, Prefix+"/signin", http.StatusSeeOther)
}

// endSession ends the request's session on the server (so a copy of the cookie is useless)
// and clears the cookie.
func (c *Console) endSession(w http.ResponseWriter, r *http.Request) {
	if id, _ := r.Context().Value(sessionIDKey{}).(string); id != "" {
		if err := c.sessions.Close(r.Context(), id); err != nil {
			c.log.Warn("end console session", "err", err)
		}
	}
	clearCookie(w, r, SessionCookie)
}

// safeNext keeps a post-sign-in target only when it is a console page of this host.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(u.Path, Prefix+"/") ||
		strings.HasPrefix(next, "//") || strings.Contains(next, "\\") || strings.Contains(u.Path, "..") {
		return Prefix + "/"
	}
	return next
}

// --- dashboard ---

type lagRow struct {
	Stream, Consumer string
	Pending          uint64
	AckPending       int
	Redelivered      int
}

type dashboardData struct {
	Agents      []agentsapi.AgentView
	AgentCounts map[string]int
	Running     []discoveryapi.Run
	Recent      []discoveryapi.Run
	Counts      cmdbapi.CountsResponse
	Classes     []classCount
	Status      gatewayapi.Status
	Lag         []lagRow
	TotalLag    uint64
}

type classCount struct {
	Class string
	N     int64
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request) {
	var (
		f   fetches
		ag  agentsapi.ListReply
		rl  discoveryapi.RunListReply
		cc  cmdbapi.CountsResponse
		st  gatewayapi.Status
		out = dashboardData{AgentCounts: map[string]int{}}
	)
	// One page of each: the dashboard summarises, the list pages page.
	f.get(c, r, "/api/v1/agents?limit=1000", &ag)
	f.get(c, r, "/api/v1/discovery/runs?limit=50", &rl)
	f.get(c, r, "/api/v1/cmdb/counts", &cc)
	f.get(c, r, "/api/v1/status", &st)
	errs := f.wait()
	out.Agents = ag.Agents
	for _, a := range ag.Agents {
		out.AgentCounts[a.Status]++
	}
	sortRuns(rl.Runs)
	for _, x := range rl.Runs {
		if !x.Final() {
			out.Running = append(out.Running, x)
		}
	}
	out.Recent = rl.Runs[:min(5, len(rl.Runs))]
	out.Counts = cc
	for k, n := range cc.Exact {
		out.Classes = append(out.Classes, classCount{k, n})
	}
	slices.SortFunc(out.Classes, func(a, b classCount) int { return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Class, b.Class)) })
	out.Status = st
	for _, s := range st.Streams {
		for _, cs := range s.Consumers {
			out.TotalLag += cs.Pending
			if cs.Pending > 0 || cs.AckPending > 0 || cs.Redelivered > 0 {
				out.Lag = append(out.Lag, lagRow{s.Name, cs.Name, cs.Pending, cs.AckPending, cs.Redelivered})
			}
		}
	}
	slices.SortFunc(out.Lag, func(a, b lagRow) int { return cmp.Compare(b.Pending, a.Pending) })
	c.show(w, r, http.StatusOK, "dashboard", &page{Title: "Dashboard", Nav: "dashboard", Data: out}, errs...)
}

func sortRuns(runs []discoveryapi.Run) {
	slices.SortFunc(runs, func(a, b discoveryapi.Run) int { return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.ID, a.ID)) })
}

// --- agents ---

type agentsData struct {
	Agents       []agentsapi.AgentView
	Cursor, Next string
}

func (c *Console) agentsPage(w http.ResponseWriter, r *http.Request, status int, p *page, errs ...error) {
	var ag agentsapi.ListReply
	cursor := r.URL.Query().Get("cursor")
	err := c.call(r, http.MethodGet, "/api/v1/agents"+query("limit", "200", "cursor", cursor), nil, &ag)
	slices.SortFunc(ag.Agents, func(a, b agentsapi.AgentView) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Name, b.Name))
	})
	p.Title, p.Nav, p.Data = "Agents", "agents", agentsData{Agents: ag.Agents, Cursor: cursor, Next: ag.NextCursor}
	c.show(w, r, status, "agents", p, append(errs, err)...)
}

func (c *Console) agents(w http.ResponseWriter, r *http.Request) {
	c.agentsPage(w, r, http.StatusOK, &page{})
}

// agentAction approves, revokes, pauses, resumes or drains an agent. Pause is the
// reversible "drain": the bridge takes no new work; drain finishes work and exits.
func (c *Console) agentAction(w http.ResponseWriter, r *http.Request) {
	ref, action := r.PathValue("agent"), r.PathValue("action")
	path := "/api/v1/agents/" + url.PathEscape(ref) + "/"
	var body any
	switch action {
	case "approve", "revoke":
		path += action
	case "pause", "resume", "drain":
		path += "control"
		body = agentsapi.ControlCommand{Command: action}
	default:
		c.agentsPage(w, r, http.StatusBadRequest, &page{}, errors.New("unknown action "+strconv.Quote(action)))
		return
	}
	// approve and revoke answer the agent; control answers the bridge's reply, which may
	// refuse (OK false). An agent never has "ok", so it decodes as OK only from control.
	reply := agentsapi.ControlReply{OK: true}
	if err := c.call(r, http.MethodPost, path, body, &reply); err != nil {
		c.agentsPage(w, r, statusOf(err), &page{}, err)
		return
	}
	if !reply.OK {
		c.agentsPage(w, r, http.StatusConflict, &page{}, errors.New("agent "+ref+": "+reply.Error))
		return
	}
	said := map[string]string{"approve": "approved", "revoke": "revoked", "pause": "paused: it takes no new work",
		"resume": "resumed", "drain": "draining: it exits once its work in flight is done"}
	done(w, r, Prefix+"/agents", "Agent "+strings.Replace(ref, ":", "/", 1)+" "+said[action]+".")
}

// --- sites and credentials ---

type sitesData struct {
	Sites       []agentsapi.Site
	Credentials []discoveryapi.Credential
	Types       []string
	// Enrolled is set right after a site is created: its enrollment token, shown once.
	Enrolled *struct {
		Site  string
		Token string
	}
	SiteForm url.Values
	CredForm url.Values
}

var credentialTypes = []string{"ssh", "snmp", "snmpv3", "ldap", "sql"}

func (c *Console) sitesPage(w http.ResponseWriter, r *http.Request, status int, p *page, d sitesData, errs ...error) {
	var (
		f  fetches
		sl agentsapi.SiteListReply
		cl discoveryapi.CredentialListReply
	)
	f.get(c, r, "/api/v1/sites?limit=1000", &sl)
	f.get(c, r, "/api/v1/credentials?limit=1000", &cl)
	errs = append(errs, f.wait()...)
	slices.SortFunc(sl.Sites, func(a, b agentsapi.Site) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(cl.Credentials, func(a, b discoveryapi.Credential) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Name, b.Name))
	})
	d.Sites, d.Credentials, d.Types = sl.Sites, cl.Credentials, credentialTypes
	if d.SiteForm == nil {
		d.SiteForm = url.Values{}
	}
	if d.CredForm == nil {
		d.CredForm = url.Values{}
	}
	p.Title, p.Nav, p.Data = "Sites and credentials", "sites", d
	c.show(w, r, status, "sites", p, errs...)
}

func (c *Console) sites(w http.ResponseWriter, r *http.Request) {
	c.sitesPage(w, r, http.StatusOK, &page{}, sitesData{})
}

// list splits a form field on commas, spaces and new lines.
func list(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

func (c *Console) siteAdd(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	body := agentsapi.SiteAddRequest{Name: strings.TrimSpace(r.PostForm.Get("name")), Ranges: list(r.PostForm.Get("ranges")),
		Exclude: list(r.PostForm.Get("exclude")), AutoApprove: r.PostForm.Get("auto_approve") != ""}
	var reply agentsapi.SiteAddReply
	if err := c.call(r, http.MethodPost, "/api/v1/sites", body, &reply); err != nil {
		c.sitesPage(w, r, statusOf(err), &page{}, sitesData{SiteForm: r.PostForm}, err)
		return
	}
	d := sitesData{}
	d.Enrolled = &struct{ Site, Token string }{reply.Site.Name, reply.Token}
	c.sitesPage(w, r, http.StatusOK, &page{Flash: "Site " + reply.Site.Name + " saved."}, d)
}

func (c *Console) credentialAdd(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	form := r.PostForm
	body := discoveryapi.CredentialAddRequest{Name: strings.TrimSpace(form.Get("name")), Type: form.Get("type"), Site: form.Get("site"),
		Secret: form.Get("secret"), Username: strings.TrimSpace(form.Get("username"))}
	fields := map[string]string{}
	for _, line := range strings.Split(form.Get("fields"), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.TrimSpace(k) != "" {
			fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	if pp := form.Get("priv_password"); pp != "" {
		fields["priv_password"] = pp
	}
	if len(fields) > 0 {
		body.Fields = fields
	}
	// The form comes back on an error without its secrets.
	keep := url.Values{}
	for _, k := range []string{"name", "type", "site", "username", "fields"} {
		keep.Set(k, form.Get(k))
	}
	if err := c.call(r, http.MethodPost, "/api/v1/credentials", body, nil); err != nil {
		c.sitesPage(w, r, statusOf(err), &page{}, sitesData{CredForm: keep}, err)
		return
	}
	done(w, r, Prefix+"/sites", "Credential "+form.Get("name")+" stored.")
}

func (c *Console) credentialRemove(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := c.call(r, http.MethodDelete, "/api/v1/credentials/"+url.PathEscape(name), nil, nil); err != nil {
		c.sitesPage(w, r, statusOf(err), &page{}, sitesData{}, err)
		return
	}
	done(w, r, Prefix+"/sites", "Credential "+name+" removed.")
}

// --- discovery ---

type discoveryData struct {
	Sites        []agentsapi.Site
	Runs         []discoveryapi.Run
	Form         url.Values
	Cursor, Next string
}

func (c *Console) discoveryPage(w http.ResponseWriter, r *http.Request, status int, form url.Values, errs ...error) {
	var (
		f  fetches
		sl agentsapi.SiteListReply
		rl discoveryapi.RunListReply
	)
	cursor := r.URL.Query().Get("cursor")
	f.get(c, r, "/api/v1/sites?limit=1000", &sl)
	f.get(c, r, "/api/v1/discovery/runs"+query("limit", "50", "cursor", cursor), &rl)
	errs = append(errs, f.wait()...)
	slices.SortFunc(sl.Sites, func(a, b agentsapi.Site) int { return cmp.Compare(a.Name, b.Name) })
	sortRuns(rl.Runs)
	if form == nil {
		form = url.Values{}
	}
	d := discoveryData{Sites: sl.Sites, Runs: rl.Runs, Form: form, Cursor: cursor, Next: rl.NextCursor}
	c.show(w, r, status, "discovery", &page{Title: "Discovery", Nav: "discovery", Data: d}, errs...)
}

func (c *Console) discovery(w http.ResponseWriter, r *http.Request) {
	c.discoveryPage(w, r, http.StatusOK, nil)
}

func (c *Console) discoveryStart(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	form := r.PostForm
	body := discoveryapi.StartRequest{Site: form.Get("site"), Ranges: list(form.Get("ranges"))}
	if ps := list(form.Get("ports")); len(ps) > 0 {
		var ports []int
		for _, p := range ps {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				c.discoveryPage(w, r, http.StatusBadRequest, form, errors.New("ports: "+strconv.Quote(p)+" is not a TCP port (1-65535)"))
				return
			}
			ports = append(ports, n)
		}
		body.Ports = ports
	}
	var reply discoveryapi.StartReply
	if err := c.call(r, http.MethodPost, "/api/v1/discovery/runs", body, &reply); err != nil {
		c.discoveryPage(w, r, statusOf(err), form, err)
		return
	}
	done(w, r, Prefix+"/discovery/runs/"+url.PathEscape(reply.Run), "Discovery run started on site "+form.Get("site")+".")
}

type runData struct {
	Run  discoveryapi.Run
	Host *discoveryapi.Host
	IP   string
}

func (c *Console) run(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	ip := r.URL.Query().Get("host")
	var (
		f  fetches
		rv discoveryapi.Run
		hv discoveryapi.Run
	)
	f.get(c, r, "/api/v1/discovery/runs/"+url.PathEscape(id), &rv)
	if ip != "" {
		f.get(c, r, "/api/v1/discovery/runs/"+url.PathEscape(id)+"?host="+url.QueryEscape(ip), &hv)
	}
	errs := f.wait()
	status := http.StatusOK
	if len(errs) > 0 && rv.ID == "" {
		status = statusOf(errs[0])
	}
	title := "Discovery run"
	if rv.ID != "" {
		title = "Run " + rv.ID
	}
	c.show(w, r, status, "run", &page{Title: title, Nav: "discovery", Data: runData{Run: rv, Host: hv.Host, IP: ip}}, errs...)
}

func (c *Console) runCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	to := Prefix + "/discovery/runs/" + url.PathEscape(id)
	if err := c.call(r, http.MethodPost, "/api/v1/discovery/runs/"+url.PathEscape(id)+"/cancel", nil, nil); err != nil {
		var rv discoveryapi.Run
		gerr := c.call(r, http.MethodGet, "/api/v1/discovery/runs/"+url.PathEscape(id), nil, &rv)
		c.show(w, r, statusOf(err), "run", &page{Title: "Run " + id, Nav: "discovery", Data: runData{Run: rv}}, err, gerr)
		return
	}
	done(w, r, to, "Cancel requested.")
}

// --- CMDB ---

type cisData struct {
	Items                []cmdbapi.CI
	Class, Search        string
	Cursor, Next         string
	Classes              []classCount
	Total                int64
	ShowingFrom, Showing int
}

const pageSize = 50

func (c *Console) cis(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := cisData{Class: q.Get("class"), Search: strings.TrimSpace(q.Get("search")), Cursor: q.Get("cursor")}
	api := url.Values{"limit": {strconv.Itoa(pageSize)}}
	for k, v := range map[string]string{"class": d.Class, "search": d.Search, "cursor": d.Cursor} {
		if v != "" {
			api.Set(k, v)
		}
	}
	var (
		f  fetches
		cl cmdbapi.ListResponse
		cc cmdbapi.CountsResponse
	)
	f.get(c, r, "/api/v1/cis?"+api.Encode(), &cl)
	f.get(c, r, "/api/v1/cmdb/counts", &cc)
	errs := f.wait()
	d.Items, d.Next = cl.Items, cl.NextCursor
	for k, n := range cc.WithSubclasses {
		d.Classes = append(d.Classes, classCount{k, n})
	}
	slices.SortFunc(d.Classes, func(a, b classCount) int { return cmp.Compare(a.Class, b.Class) })
	d.Total = cc.Total
	if d.Class != "" {
		d.Total = cc.WithSubclasses[d.Class]
	}
	c.show(w, r, http.StatusOK, "cis", &page{Title: "CMDB", Nav: "cis", Data: d}, errs...)
}

type ciData struct {
	CI       cmdbapi.Detail
	Rel      cmdbapi.RelResponse
	History  cmdbapi.HistoryResponse
	Topology topology
	HCursor  string
}

func (c *Console) ci(w http.ResponseWriter, r *http.Request) {
	id := url.PathEscape(r.PathValue("id"))
	hc := r.URL.Query().Get("hcursor")
	var (
		f  fetches
		d  = ciData{HCursor: hc}
		gr cmdbapi.Graph
	)
	hpath := "/api/v1/cis/" + id + "/history"
	if hc != "" {
		hpath += "?cursor=" + url.QueryEscape(hc)
	}
	f.get(c, r, "/api/v1/cis/"+id, &d.CI)
	f.get(c, r, "/api/v1/cis/"+id+"/relations", &d.Rel)
	f.get(c, r, hpath, &d.History)
	f.get(c, r, "/api/v1/cis/"+id+"/graph", &gr)
	errs := f.wait()
	sortRelations(d.Rel.Outgoing)
	sortRelations(d.Rel.Incoming)
	d.Topology = layout(gr, d.CI.ID)
	status := http.StatusOK
	if d.CI.ID == "" && len(errs) > 0 {
		status = statusOf(errs[0])
	}
	title := d.CI.Name
	if title == "" {
		title = "CI " + r.PathValue("id")
	}
	c.show(w, r, status, "ci", &page{Title: title, Nav: "cis", Data: d}, errs...)
}

// sortRelations puts what a reader looks for first: relations to devices and applications
// before the long tail of installed software, then by type and name.
func sortRelations(rs []cmdbapi.Relation) {
	tail := func(r cmdbapi.Relation) int {
		if r.Peer.Class == "software" {
			return 1
		}
		return 0
	}
	slices.SortFunc(rs, func(a, b cmdbapi.Relation) int {
		return cmp.Or(cmp.Compare(tail(a), tail(b)), cmp.Compare(a.Type, b.Type), cmp.Compare(a.Peer.Name, b.Peer.Name), cmp.Compare(a.ID, b.ID))
	})
}

// --- DLQ ---

type dlqData struct {
	Service   string
	Available bool
	Items     []gatewayapi.DLQItem
	Next      string
	Cursor    string
	Size      uint64
	Bytes     uint64
}

func (c *Console) dlq(w http.ResponseWriter, r *http.Request) {
	cursor, service := r.URL.Query().Get("cursor"), strings.TrimSpace(r.URL.Query().Get("service"))
	api := url.Values{"limit": {"50"}}
	if cursor != "" {
		api.Set("cursor", cursor)
	}
	if service != "" {
		api.Set("service", service)
	}
	var (
		st   gatewayapi.Status
		dl   gatewayapi.DLQList
		lerr error
		serr error
		fin  = make(chan struct{})
	)
	go func() {
		defer close(fin)
		serr = c.call(r, http.MethodGet, "/api/v1/status", nil, &st)
	}()
	lerr = c.call(r, http.MethodGet, "/api/v1/dlq?"+api.Encode(), nil, &dl)
	<-fin
	d := dlqData{Service: service, Available: true, Items: dl.Items, Next: dl.NextCursor, Cursor: cursor, Size: st.DLQ.Messages, Bytes: st.DLQ.Bytes}
	var ae *APIError
	if errors.As(lerr, &ae) && ae.Status == http.StatusNotFound {
		d.Available, lerr = false, nil // an older gateway without the listing
	}
	c.show(w, r, http.StatusOK, "dlq", &page{Title: "Dead letters", Nav: "dlq", Data: d}, lerr, serr)
}
