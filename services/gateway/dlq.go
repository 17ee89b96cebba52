package gateway

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/dlq"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// routeDLQ exposes svc.dlq.*: one dead letter whole (viewer, as the list's preview is), and
// retrying or purging dead letters (admin: a retry re-publishes a message with the hub's
// connection, a purge destroys evidence). The list itself is the gateway's (GET /api/v1/dlq).
func (a *API) routeDLQ(mux *router) {
	const timeout = 60 * time.Second // a retry or purge of everything walks the whole DLQ
	mux.Handle("GET /api/v1/dlq/{seq}", a.auth(tokens.RoleViewer, relay(a, api.Show, 10*time.Second, func(r *http.Request) (api.ShowRequest, error) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil || seq == 0 {
			return api.ShowRequest{}, fmt.Errorf("%q is not the SEQ of a dead letter (outpost dlq ls)", r.PathValue("seq"))
		}
		return api.ShowRequest{Seq: seq}, nil
	})), opDoc(api.Show, nil))
	mux.Handle("POST /api/v1/dlq/retry", a.auth(tokens.RoleAdmin, relay(a, api.Retry, timeout, func(r *http.Request) (api.RetryRequest, error) {
		in, err := decodeBody[api.RetryRequest](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	})), opDoc(api.Retry, bodyOf[api.RetryRequest]()))
	mux.Handle("POST /api/v1/dlq/purge", a.auth(tokens.RoleAdmin, relay(a, api.Purge, timeout, func(r *http.Request) (api.PurgeRequest, error) {
		in, err := decodeBody[api.PurgeRequest](r)
		if err == nil {
			err = in.Validate()
		}
		return in, err
	})), opDoc(api.Purge, bodyOf[api.PurgeRequest]()))
}
