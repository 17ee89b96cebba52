package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeTokens: API tokens are the gateway's own (KV tokens, hashed); admins manage them.
func (a *API) routeTokens(mux *router) {
	mux.Handle("POST /api/v1/tokens", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := decodeBody[gatewayapi.TokenCreateRequest](r)
		if err != nil {
			problem(w, r, errs.BadRequest, "Bad request", err.Error())
			return
		}
		secret, t, err := a.deps.Tokens.Create(r.Context(), req.Name, req.Role)
		if err != nil {
			problem(w, r, errs.BadRequest, "Bad request", err.Error())
			return
		}
		a.audit(r, "token_create", http.StatusOK)
		writeJSON(w, http.StatusOK, gatewayapi.TokenCreated{Token: secret, ID: t.ID, Name: t.Name, Role: t.Role, Created: t.Created})
	})), doc[gatewayapi.TokenCreated](bodyOf[gatewayapi.TokenCreateRequest]()))
	mux.Handle("GET /api/v1/tokens", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		preq, err := pageRequest(r)
		if err != nil {
			problem(w, r, errs.BadRequest, "Bad request", err.Error())
			return
		}
		list, err := a.deps.Tokens.List(r.Context())
		if err != nil {
			problem(w, r, errs.Unavailable, "Token store unavailable", err.Error())
			return
		}
		// Oldest first, as the store lists them; creation time then id is unique.
		key := func(t tokens.Token) string { return t.Created.UTC().Format(sortableTime) + "|" + t.ID }
		slices.SortFunc(list, func(a, b tokens.Token) int { return strings.Compare(key(a), key(b)) })
		items, next, err := page.Slice(list, preq, key, strings.Compare)
		if err != nil {
			serviceProblem(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, gatewayapi.TokenList{Tokens: items, NextCursor: next})
	})), doc[gatewayapi.TokenList](nil, pageParams))
	// By ID, or by name: then every token of that name.
	mux.Handle("DELETE /api/v1/tokens/{id}", a.auth(tokens.RoleAdmin, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		revoked, err := a.deps.Tokens.Revoke(r.Context(), r.PathValue("id"))
		if err != nil {
			code := errs.NotFound
			if !errors.Is(err, tokens.ErrNotFound) {
				code = errs.Unavailable
			}
			e, _ := errs.Lookup(code)
			problem(w, r, code, http.StatusText(e.Status), err.Error())
			return
		}
		a.audit(r, "token_revoke", http.StatusOK)
		writeJSON(w, http.StatusOK, gatewayapi.TokenRevoked{Revoked: revoked})
	})), doc[gatewayapi.TokenRevoked](nil))
}
