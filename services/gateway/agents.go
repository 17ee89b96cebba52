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

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// maxBody bounds every request body: larger is refused, not truncated.
const maxBody = 1 << 20

// routeAgents registers sites, agents and probes: all served by the agents service over
// svc.agents.* (the gateway never reads its stores).
func (a *API) routeAgents(mux *router) {
	mux.Handle("GET /api/v1/sites", a.auth(tokens.RoleViewer, relay(a, agentsapi.SiteList, 15*time.Second, pageRequest)),
		opDoc(agentsapi.SiteList, nil, pageParams))
	mux.Handle("POST /api/v1/sites", a.auth(tokens.RoleAdmin, relay(a, agentsapi.SiteAdd, 15*time.Second, decodeBody[agentsapi.SiteAddRequest])),
		opDoc(agentsapi.SiteAdd, bodyOf[agentsapi.SiteAddRequest]()))
	// Enrollment tokens: bearer secrets that let a bridge join a site, so admin only; the
	// secret is in the answer to POST, once, and never in a list.
	mux.Handle("POST /api/v1/enrollment-tokens", a.auth(tokens.RoleAdmin, relay(a, agentsapi.SiteTokenAdd, 15*time.Second, decodeBody[agentsapi.TokenAddRequest])),
		opDoc(agentsapi.SiteTokenAdd, bodyOf[agentsapi.TokenAddRequest]()))
	mux.Handle("GET /api/v1/enrollment-tokens", a.auth(tokens.RoleAdmin, relay(a, agentsapi.SiteTokenList, 15*time.Second, func(r *http.Request) (agentsapi.TokenListRequest, error) {
		p, err := pageRequest(r)
		return agentsapi.TokenListRequest{Site: r.URL.Query().Get("site"), Request: p}, err
	})), opDoc(agentsapi.SiteTokenList, nil, pageParams, []queryParam{{"site", "string", "only this site's tokens"}}))
	mux.Handle("DELETE /api/v1/enrollment-tokens/{id}", a.auth(tokens.RoleAdmin, relay(a, agentsapi.SiteTokenRevoke, 15*time.Second, func(r *http.Request) (agentsapi.TokenRef, error) {
		return agentsapi.TokenRef{ID: r.PathValue("id")}, nil
	})), opDoc(agentsapi.SiteTokenRevoke, nil))
	mux.Handle("GET /api/v1/agents", a.auth(tokens.RoleViewer, relay(a, agentsapi.List, 15*time.Second, pageRequest)),
		opDoc(agentsapi.List, nil, pageParams))
	ref := func(r *http.Request) (agentsapi.AgentRef, error) { return agentsapi.AgentRef{Agent: agentRef(r)}, nil }
	mux.Handle("POST /api/v1/agents/{agent}/approve", a.auth(tokens.RoleAdmin, relay(a, agentsapi.Approve, 15*time.Second, ref)), opDoc(agentsapi.Approve, nil))
	mux.Handle("POST /api/v1/agents/{agent}/revoke", a.auth(tokens.RoleAdmin, relay(a, agentsapi.Revoke, 15*time.Second, ref)), opDoc(agentsapi.Revoke, nil))
	mux.Handle("POST /api/v1/agents/{agent}/forget", a.auth(tokens.RoleAdmin, relay(a, agentsapi.Forget, 15*time.Second, ref)), opDoc(agentsapi.Forget, nil))
	mux.Handle("POST /api/v1/agents/{agent}/control", a.auth(tokens.RoleOperator, relay(a, agentsapi.Control, 15*time.Second, func(r *http.Request) (agentsapi.ControlRequest, error) {
		c, err := decodeBody[agentsapi.ControlCommand](r)
		return agentsapi.ControlRequest{Agent: agentRef(r), ControlCommand: c}, err
	})), opDoc(agentsapi.Control, bodyOf[agentsapi.ControlCommand]()))
	// The site's bridges learn the pin at their next re-registration and upgrade themselves.
	mux.Handle("POST /api/v1/sites/{site}/pin-version", a.auth(tokens.RoleAdmin, relay(a, agentsapi.SitePinVersion, 15*time.Second, func(r *http.Request) (agentsapi.PinVersionRequest, error) {
		req, err := decodeBody[agentsapi.PinVersionRequest](r)
		if err == nil && req.Site != "" && req.Site != r.PathValue("site") {
			err = fmt.Errorf("site %q in the body is not the path's %q", req.Site, r.PathValue("site"))
		}
		req.Site = r.PathValue("site")
		return req, err
	})), opDoc(agentsapi.SitePinVersion, bodyOf[agentsapi.PinVersionRequest]()))
	mux.Handle("POST /api/v1/probes", a.auth(tokens.RoleOperator, relay(a, agentsapi.Probe, time.Hour, decodeBody[agentsapi.ProbeRequest])),
		opDoc(agentsapi.Probe, bodyOf[agentsapi.ProbeRequest]()))
}

// agentRef reads NAME or SITE:NAME from the path.
func agentRef(r *http.Request) string { return strings.Replace(r.PathValue("agent"), ":", "/", 1) }

// relay serves a route by one op of a service: build makes the op's request from the HTTP
// request (its body decoded strictly into the contract type), and the op's answer, decoded
// into its contract type, is the response.
func relay[Req, Resp any](a *API, op bus.Op[Req, Resp], timeout time.Duration, build func(*http.Request) (Req, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := build(r)
		if err != nil {
			problem(w, r, errs.BadRequest, "Bad request", badInput(err))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		out, err := op.Call(ctx, a.deps.NC, req)
		if err != nil {
			serviceProblem(w, r, err)
			return
		}
		if r.Method != http.MethodGet {
			a.audit(r, op.Name, http.StatusOK)
		}
		// Compact, as the service wrote it: embedded raw values (probe data) stay byte for byte.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_ = json.NewEncoder(w).Encode(out)
	})
}

// serviceProblem maps a service error to its problem document: the status it carries, the
// type of its code in the error table.
func serviceProblem(w http.ResponseWriter, r *http.Request, err error) {
	var se *bus.ServiceError
	if !errors.As(err, &se) {
		problem(w, r, errs.Upstream, "Service call failed", err.Error())
		return
	}
	code := se.ErrCode
	if e, ok := errs.Lookup(code); !ok || e.Scope&errs.API == 0 {
		code = errs.ForStatus(se.Code).Code
	}
	writeProblem(w, r, se.Code, code, http.StatusText(se.Code), se.Message)
}

// decodeBody reads a JSON body strictly: at most 1 MiB, no unknown fields, the right types;
// errors name the field.
func decodeBody[T any](r *http.Request) (T, error) {
	var v T
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	dec.UseNumber() // numbers inside untyped values (CI attributes) pass on digit for digit
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
