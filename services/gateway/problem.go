package gateway

import (
	"encoding/json"
	"net/http"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/errs"
)

// Problem is an RFC 9457 problem detail (libs/api/gateway).
type Problem = gatewayapi.Problem

// problem writes the problem document of an API code of the error table, with its status.
func problem(w http.ResponseWriter, r *http.Request, code errs.Code, title, detail string) {
	e, ok := errs.Lookup(code)
	if !ok || e.Scope&errs.API == 0 {
		e = errs.ForStatus(http.StatusInternalServerError)
	}
	writeProblem(w, r, e.Status, e.Code, title, detail)
}

// writeProblem writes a problem document whose status a service chose.
func writeProblem(w http.ResponseWriter, r *http.Request, status int, code errs.Code, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{Type: code.ProblemType(), Title: title, Status: status, Detail: detail, Instance: r.URL.Path})
}
