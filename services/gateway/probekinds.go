package gateway

import (
	"net/http"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

func probeKindOf(s probes.Spec) gatewayapi.ProbeKind {
	creds := s.Credentials
	if creds == nil {
		creds = []string{}
	}
	return gatewayapi.ProbeKind{Kind: s.Kind, Description: s.Description, Capability: s.Capability, CredentialTypes: creds,
		Params: s.ParamsSchema().JSON(), Codes: s.Codes}
}

// routeProbeKinds serves the kind table; the hub answers it itself (no service holds it).
func (a *API) routeProbeKinds(mux *router) {
	mux.Handle("GET /api/v1/probe-kinds", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out := gatewayapi.ProbeKindList{Codes: probes.Codes}
		for _, s := range catalog.All() {
			out.Items = append(out.Items, probeKindOf(s))
		}
		writeJSON(w, http.StatusOK, out)
	})), doc[gatewayapi.ProbeKindList](nil))
	mux.Handle("GET /api/v1/probe-kinds/{kind}", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := catalog.Lookup(r.PathValue("kind"))
		if !ok {
			problem(w, r, errs.NotFound, "No such probe kind",
				r.PathValue("kind")+" is not a probe kind; GET /api/v1/probe-kinds lists them")
			return
		}
		writeJSON(w, http.StatusOK, probeKindOf(s))
	})), doc[gatewayapi.ProbeKind](nil))
}
