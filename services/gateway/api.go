package gateway

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	gatewayapi "github.com/outpost-dev/outpost/libs/api/gateway"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/errs"
	"github.com/outpost-dev/outpost/libs/telemetry/metrics"
	"github.com/outpost-dev/outpost/services/gateway/console"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// API holds the HTTP handlers.
type API struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	fails *failLimiter
	// sessions are the console's sign-ins.
	sessions *sessions
	// closing is closed when the server starts shutting down (console streams end then).
	closing chan struct{}
	// metrics observes the bus for /metrics and the status's rates.
	metrics  *metrics.Hub
	registry *prometheus.Registry
}

// Handler is the gateway's routing table. Every API route goes through one router that
// records it, so the OpenAPI document is generated from the routes that exist.
func (a *API) Handler() http.Handler {
	mux := newRouter()
	mux.mux.HandleFunc("GET /healthz", a.healthz)
	// Prometheus text format; a viewer token (Prometheus's bearer_token) like the rest of
	// the API: site and bridge names are not for anyone on the network.
	mux.mux.Handle("GET /metrics", a.auth(tokens.RoleViewer, metrics.Handler(a.registry)))
	mux.Handle("GET /api/v1/status", a.auth(tokens.RoleViewer, http.HandlerFunc(a.status)), doc[Status](nil))
	mux.Handle("GET /api/v1/whoami", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, _ := Caller(r.Context())
		writeJSON(w, http.StatusOK, Identity{Name: t.Name, Role: t.Role})
	})), doc[Identity](nil))
	a.routeAgents(mux)
	a.routeCIs(mux)
	a.routeTokens(mux)
	a.routeDiscovery(mux)
	a.routeProbeKinds(mux)
	a.routeWorkflows(mux)
	a.routeAlerts(mux)
	a.routeImports(mux)
	a.routeImportSources(mux)
	mux.Handle("GET /api/v1/audit", a.auth(tokens.RoleViewer, http.HandlerFunc(a.listAudit)), doc[gatewayapi.AuditList](nil, pageParams))
	mux.Handle("GET /api/v1/dlq", a.auth(tokens.RoleViewer, http.HandlerFunc(a.listDLQ)), doc[gatewayapi.DLQList](nil, pageParams,
		[]queryParam{{"service", "string", "only what this service dead-lettered (discovery, cmdb, bridge…)"}}))
	a.routeDLQ(mux)
	a.routeServices(mux)
	doc := mux.openAPI(a.cfg.Version)
	mux.mux.Handle("GET /api/v1/openapi.json", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, doc)
	})))
	// Anything else under /api/v1 still needs a token before it may learn it does not exist.
	mux.mux.Handle("/api/v1/", a.auth(tokens.RoleViewer, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem(w, r, errs.NotFound, "No such API route", r.Method+" "+r.URL.Path+" is not an Outpost API route; see /api/v1/openapi.json")
	})))
	mux.mux.Handle("/", console.New(console.Options{API: mux.mux, Version: a.cfg.Version, Logger: a.log, Closing: a.closing,
		Sessions: a.sessions, AsSession: asSession}))
	return mux.mux
}

// healthz is 200 only when the bus is connected and every stream of the topology exists.
func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if !a.deps.NC.IsConnected() {
		problem(w, r, errs.Unavailable, "Bus not connected", "the gateway has no connection to NATS")
		return
	}
	have := map[string]bool{}
	names := a.deps.JS.StreamNames(ctx)
	for n := range names.Name() {
		have[n] = true
	}
	var missing []string
	for _, s := range a.deps.Topology.Streams {
		if !have[s.Name] {
			missing = append(missing, s.Name)
		}
	}
	if names.Err() != nil || len(missing) > 0 {
		problem(w, r, errs.Unavailable, "Bus not provisioned", "missing streams: "+strings.Join(missing, ", "))
		return
	}
	if a.deps.Pending != nil {
		if p := a.deps.Pending(); len(p) > 0 {
			problem(w, r, errs.Unavailable, "Starting", "waiting for services: "+strings.Join(p, ", "))
			return
		}
	}
	writeJSON(w, http.StatusOK, gatewayapi.Health{Status: "ok", Version: a.cfg.Version})
}

// What the gateway answers itself is the contract's (libs/api/gateway).
type (
	Identity       = gatewayapi.Identity
	Status         = gatewayapi.Status
	StreamStatus   = gatewayapi.StreamStatus
	ConsumerStatus = gatewayapi.ConsumerStatus
	DLQStatus      = gatewayapi.DLQStatus
)

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	st := Status{Version: a.cfg.Version, Streams: []StreamStatus{}}
	lister := a.deps.JS.ListStreams(ctx)
	for info := range lister.Info() {
		ss := StreamStatus{Name: info.Config.Name, Messages: info.State.Msgs, Bytes: info.State.Bytes, Consumers: []ConsumerStatus{}}
		if strings.HasPrefix(ss.Name, "KV_") || strings.HasPrefix(ss.Name, "OBJ_") {
			continue // buckets are not streams to an operator
		}
		if stream, err := a.deps.JS.Stream(ctx, ss.Name); err == nil {
			cl := stream.ListConsumers(ctx)
			for ci := range cl.Info() {
				ss.Consumers = append(ss.Consumers, ConsumerStatus{Name: ci.Name, Pending: ci.NumPending,
					AckPending: ci.NumAckPending, Redelivered: ci.NumRedelivered})
			}
		}
		if ss.Name == bus.StreamDLQ {
			st.DLQ = DLQStatus{Messages: ss.Messages, Bytes: ss.Bytes}
		}
		st.Streams = append(st.Streams, ss)
	}
	if err := lister.Err(); err != nil {
		problem(w, r, errs.Unavailable, "Bus unavailable", err.Error())
		return
	}
	slices.SortFunc(st.Streams, func(a, b StreamStatus) int { return strings.Compare(a.Name, b.Name) })
	if a.metrics != nil {
		r := a.metrics.Rates()
		st.Rates = &gatewayapi.Rates{WindowSeconds: r.Window.Seconds(), Probes: r.Probes, ScanAddresses: r.ScanAddrs,
			CMDBIngested: r.CMDBIngested, AlertWrites: r.AlertWrites}
	}
	writeJSON(w, http.StatusOK, st)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
