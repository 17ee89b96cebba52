package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// maxBody bounds every request body: larger is refused, not truncated.
const maxBody = 1 << 20

// routeAgents registers sites, agents and probes: all served by the agents service over
// svc.agents.* (the gateway never reads its stores).
func (a *API) routeAgents(mux *router) {
	type siteAdd struct {
		Name        string   `json:"name"`
		Ranges      []string `json:"ranges"`
		Exclude     []string `json:"exclude,omitempty"`
		AutoApprove bool     `json:"auto_approve,omitempty"`
		TokenTTL    string   `json:"token_ttl,omitempty"`  // lifetime of the enrollment token, "24h" by default
		TokenUses   int      `json:"token_uses,omitempty"` // enrollments it allows; 0 = any until it expires
	}
	type tokenAdd struct {
		Site        string `json:"site"`
		TTL         string `json:"ttl,omitempty"`
		Uses        int    `json:"uses,omitempty"`
		AutoApprove bool   `json:"auto_approve,omitempty"`
	}
	type control struct {
		Command string `json:"command"`
		Lines   int    `json:"lines,omitempty"`
	}
	type probeReq struct {
		Site     string          `json:"site"`
		Kind     string          `json:"kind"`
		Target   string          `json:"target,omitempty"`
		Params   json.RawMessage `json:"params,omitempty"`
		Priority string          `json:"priority,omitempty"`
		Timeout  string          `json:"timeout,omitempty"`
		// Credentials name stored credentials; their secrets never pass through here.
		Credentials []string `json:"credentials,omitempty"`
	}
	mux.Handle("GET /api/v1/sites", a.auth(tokens.RoleViewer, a.relay("site_ls", pageQuery)), pageParams)
	mux.Handle("POST /api/v1/sites", a.auth(tokens.RoleAdmin, a.relay("site_add", func(r *http.Request) (any, error) {
		return decodeBody[siteAdd](r)
	})))
	// Enrollment tokens: bearer secrets that let a bridge join a site, so admin only; the
	// secret is in the answer to POST, once, and never in a list.
	mux.Handle("POST /api/v1/enrollment-tokens", a.auth(tokens.RoleAdmin, a.relay("site_token_add", func(r *http.Request) (any, error) {
		return decodeBody[tokenAdd](r)
	})))
	mux.Handle("GET /api/v1/enrollment-tokens", a.auth(tokens.RoleAdmin, a.relay("site_token_ls", func(r *http.Request) (any, error) {
		p, err := pageRequest(r)
		return map[string]any{"site": r.URL.Query().Get("site"), "cursor": p.Cursor, "limit": p.Limit}, err
	})), pageParams, []queryParam{{"site", "string", "only this site's tokens"}})
	mux.Handle("DELETE /api/v1/enrollment-tokens/{id}", a.auth(tokens.RoleAdmin, a.relay("site_token_revoke", func(r *http.Request) (any, error) {
		return map[string]string{"id": r.PathValue("id")}, nil
	})))
	mux.Handle("GET /api/v1/agents", a.auth(tokens.RoleViewer, a.relay("ls", pageQuery)), pageParams)
	for _, op := range []string{"approve", "revoke", "forget"} {
		mux.Handle("POST /api/v1/agents/{agent}/"+op, a.auth(tokens.RoleAdmin, a.relay(op, func(r *http.Request) (any, error) {
			return map[string]string{"agent": agentRef(r)}, nil
		})))
	}
	mux.Handle("POST /api/v1/agents/{agent}/control", a.auth(tokens.RoleOperator, a.relay("control", func(r *http.Request) (any, error) {
		c, err := decodeBody[control](r)
		return map[string]any{"agent": agentRef(r), "command": c.Command, "lines": c.Lines}, err
	})))
	mux.Handle("POST /api/v1/probes", a.auth(tokens.RoleOperator, a.relayTimeout("probe", time.Hour, func(r *http.Request) (any, error) {
		return decodeBody[probeReq](r)
	})))
}

// agentRef reads NAME or SITE:NAME from the path.
func agentRef(r *http.Request) string { return strings.Replace(r.PathValue("agent"), ":", "/", 1) }

func (a *API) relay(op string, body func(*http.Request) (any, error)) http.Handler {
	return a.relayTo("agents", op, 15*time.Second, body)
}

func (a *API) relayTimeout(op string, timeout time.Duration, body func(*http.Request) (any, error)) http.Handler {
	return a.relayTo("agents", op, timeout, body)
}

// relayTo forwards a request to svc.<service>.<op> and writes its answer or its error.
func (a *API) relayTo(service, op string, timeout time.Duration, body func(*http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req any
		if body != nil {
			var err error
			if req, err = body(r); err != nil {
				problem(w, r, http.StatusBadRequest, "bad-request", "Bad request", err.Error())
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var out json.RawMessage
		if err := bus.Request(ctx, a.deps.NC, service, op, req, &out); err != nil {
			serviceProblem(w, r, err)
			return
		}
		if r.Method != http.MethodGet {
			a.audit(r, op, http.StatusOK)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(out)
	})
}

// serviceProblem maps a service error to its problem document.
func serviceProblem(w http.ResponseWriter, r *http.Request, err error) {
	var se *bus.ServiceError
	if !errors.As(err, &se) {
		problem(w, r, http.StatusBadGateway, "upstream", "Service call failed", err.Error())
		return
	}
	kinds := map[int]string{400: "bad-request", 403: "forbidden", 404: "not-found", 409: "conflict", 503: "unavailable", 504: "timeout"}
	kind, ok := kinds[se.Code]
	if !ok {
		kind = "internal"
	}
	problem(w, r, se.Code, kind, http.StatusText(se.Code), se.Message)
}

// decodeBody reads a JSON body strictly: at most 1 MiB, no unknown fields, the right types;
// errors name the field.
func decodeBody[T any](r *http.Request) (T, error) {
	var v T
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &mbe):
			return v, fmt.Errorf("body larger than %d bytes", maxBody)
		case errors.As(err, &ute):
			return v, fmt.Errorf("field %q: want %s, got %s", ute.Field, ute.Type, ute.Value)
		case errors.As(err, &se):
			return v, fmt.Errorf("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.Is(err, io.EOF):
			return v, errors.New("empty body: send a JSON object")
		default:
			return v, err // unknown field "x" is already named by encoding/json
		}
	}
	if dec.More() {
		return v, errors.New("trailing data after the JSON object")
	}
	return v, nil
}

// AuditSubject is where the gateway records every write (EVENTS stream, kept for replay).
var AuditSubject = bus.EventSubject("hub", "audit")

// audit records a write — who, what, when, from where — as an event on the bus, and logs it.
// A failed publish is logged as an error: the write itself already happened.
func (a *API) audit(r *http.Request, action string, status int) {
	t, _ := Caller(r.Context())
	a.log.Info("audit", "actor", t.Name, "role", t.Role, "action", action, "path", r.URL.Path, "remote", r.RemoteAddr, "status", status)
	ev := &envelope.Audit{Actor: t.Name, Role: t.Role, Action: action, Target: r.URL.Path, Remote: r.RemoteAddr,
		Status: status, Time: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, err := bus.NewPublisher(a.deps.JS, envelope.ServiceSource("gateway"), nil).Publish(ctx, AuditSubject, envelope.Meta{}, ev); err != nil {
		a.log.Error("audit event not published", "action", action, "err", err)
	}
}
