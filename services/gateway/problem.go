package gateway

import (
	"encoding/json"
	"net/http"
)

// problemBase prefixes the stable type URI of every error kind (RFC 9457).
const problemBase = "https://outpost.dev/problems/"

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

func problem(w http.ResponseWriter, r *http.Request, status int, kind, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Problem{Type: problemBase + kind, Title: title, Status: status, Detail: detail, Instance: r.URL.Path})
}
