package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

type ctxKey struct{}

// Caller returns the verified token of the request.
func Caller(ctx context.Context) (tokens.Token, bool) {
	t, ok := ctx.Value(ctxKey{}).(tokens.Token)
	return t, ok
}

// rank orders roles: a role may do what any lower role may. A role that is not one of
// tokens.Roles, blank included, ranks 0, below viewer: it may do nothing (fail closed; the
// review found an unknown role ranking above admin).
func rank(role string) int {
	i := slices.Index(tokens.Roles, role)
	if i < 0 {
		return 0
	}
	return len(tokens.Roles) - i
}

type sessionCtxKey struct{}

// asSession marks an in-process request of the console as made by the signed-in session
// whose token has hash h. Only code in this process can set a context value: a network
// request cannot claim a session this way.
func asSession(ctx context.Context, h string) context.Context {
	return context.WithValue(ctx, sessionCtxKey{}, h)
}

// auth admits requests carrying a valid bearer token (or, from the console in process, a
// session's token hash) whose role is at least min.
func (a *API) auth(min string, next http.Handler) http.Handler {
	if rank(min) == 0 {
		panic("gateway: route guarded by unknown role " + strconv.Quote(min))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, ok := r.Context().Value(sessionCtxKey{}).(string); ok {
			t, err := a.deps.Tokens.VerifyHash(r.Context(), h)
			a.admit(w, r, min, t, err, next)
			return
		}
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost"`)
			problem(w, r, errs.Unauthorized, "Authentication required",
				"send Authorization: Bearer <token>; `outpost up` wrote an admin token to <data>/admin.token")
			return
		}
		secret = strings.TrimSpace(secret)
		addr := clientKey(r)
		if ok, wait := a.fails.allow(addr, secret); !ok {
			secs := max(1, int((wait+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			problem(w, r, errs.RateLimited, "Too many failed authentications",
				fmt.Sprintf("this address sent too many invalid tokens; wait %d s, then retry with a valid token (`outpost tokens ls` on the hub lists them)", secs))
			return
		}
		t, err := a.deps.Tokens.Verify(r.Context(), secret)
		switch {
		case errors.Is(err, tokens.ErrInvalid):
			a.fails.failed(addr)
		case err == nil:
			a.fails.succeeded(addr, secret)
		}
		a.admit(w, r, min, t, err, next)
	})
}

// admit answers a request whose token was looked up (err from the lookup).
func (a *API) admit(w http.ResponseWriter, r *http.Request, min string, t tokens.Token, err error, next http.Handler) {
	if err != nil {
		if errors.Is(err, tokens.ErrInvalid) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost", error="invalid_token"`)
			problem(w, r, errs.Unauthorized, "Invalid token", "the token is unknown or revoked")
			return
		}
		problem(w, r, errs.Unavailable, "Token store unavailable", err.Error())
		return
	}
	if rank(t.Role) < rank(min) {
		problem(w, r, errs.Forbidden, "Role not allowed", "this needs role "+min+" or higher; the token has role "+t.Role)
		return
	}
	next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, t)))
}
