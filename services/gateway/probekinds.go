package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// ProbeKind is one probe kind as the API describes it, from its contract in libs/probes:
// what to grant a site for it, which stored credentials it takes, its params' JSON Schema
// (the one the bridge validates against) and its own error codes.
type ProbeKind struct {
	Kind            string          `json:"kind"`
	Description     string          `json:"description"`
	Capability      string          `json:"capability"`
	CredentialTypes []string        `json:"credential_types"`
	Params          json.RawMessage `json:"params"`
	Codes           []probes.Code   `json:"codes,omitempty"`
}

func probeKindOf(s probes.Spec) ProbeKind {
	creds := s.Credentials
	if creds == nil {
		creds = []string{}
	}
	return ProbeKind{Kind: s.Kind, Description: s.Description, Capability: s.Capability, CredentialTypes: creds,
		Params: s.ParamsSchema().JSON(), Codes: s.Codes}
}

// routeProbeKinds serves the kind table; the hub answers it itself (no service holds it).
func (a *API) routeProbeKinds(mux *router) {
	mux.Handle("GET /api/v1/probe-kinds", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var out []ProbeKind
		for _, s := range catalog.All() {
			out = append(out, probeKindOf(s))
		}
		writeJSON(w, http.StatusOK, map[string]any{"items": out, "codes": probes.Codes})
	})))
	mux.Handle("GET /api/v1/probe-kinds/{kind}", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := catalog.Lookup(r.PathValue("kind"))
		if !ok {
			problem(w, r, http.StatusNotFound, "not-found", "No such probe kind",
				r.PathValue("kind")+" is not a probe kind; GET /api/v1/probe-kinds lists them")
			return
		}
		writeJSON(w, http.StatusOK, probeKindOf(s))
	})))
}
