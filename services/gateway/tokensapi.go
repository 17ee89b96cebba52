package gateway

import (
	"errors"
	"net/http"

	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeTokens: API tokens are the gateway's own (KV tokens, hashed); admins manage them.
func (a *API) routeTokens(mux *router) {
	type createReq struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	mux.Handle("POST /api/v1/tokens", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := decodeBody[createReq](r)
		if err != nil {
			problem(w, r, http.StatusBadRequest, "bad-request", "Bad request", err.Error())
			return
		}
		secret, t, err := a.deps.Tokens.Create(r.Context(), req.Name, req.Role)
		if err != nil {
			problem(w, r, http.StatusBadRequest, "bad-request", "Bad request", err.Error())
			return
		}
		a.audit(r, "token_create", http.StatusOK)
		writeJSON(w, http.StatusOK, map[string]any{"token": secret, "id": t.ID, "name": t.Name, "role": t.Role, "created": t.Created})
	})))
	mux.Handle("GET /api/v1/tokens", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		list, err := a.deps.Tokens.List(r.Context())
		if err != nil {
			problem(w, r, http.StatusServiceUnavailable, "unavailable", "Token store unavailable", err.Error())
			return
		}
		if list == nil {
			list = []tokens.Token{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tokens": list})
	})))
	mux.Handle("DELETE /api/v1/tokens/{id}", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, err := a.deps.Tokens.Revoke(r.Context(), r.PathValue("id"))
		if err != nil {
			kind, code := "not-found", http.StatusNotFound
			if !errors.Is(err, tokens.ErrNotFound) {
				kind, code = "unavailable", http.StatusServiceUnavailable
			}
			problem(w, r, code, kind, http.StatusText(code), err.Error())
			return
		}
		a.audit(r, "token_revoke", http.StatusOK)
		writeJSON(w, http.StatusOK, t)
	})))
}
