package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	discoveryapi "github.com/outpost-dev/outpost/libs/api/discovery"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// runEvent is what the live run page receives: the run as the API gave it, plus the
// figures the page shows computed once here.
type runEvent struct {
	discoveryapi.Run
	Progress int  `json:"progress"`
	Final    bool `json:"final"`
}

// runEvents streams a run's progress as Server-Sent Events: "event: run" whenever it
// changed, and "event: end" once the run is final. The page works without it; the stream
// only saves reloading.
func (c *Console) runEvents(w http.ResponseWriter, r *http.Request) {
	path := "/api/v1/discovery/runs/" + url.PathEscape(r.PathValue("id"))
	c.stream(w, r, "run", true, func() ([]byte, bool, error) {
		var rv discoveryapi.Run
		if err := c.call(r, http.MethodGet, path, nil, &rv); err != nil {
			return nil, false, err
		}
		b, err := json.Marshal(runEvent{Run: rv, Progress: rv.Progress(), Final: rv.Final()})
		return b, rv.Final(), err
	})
}

// stream is every live page's event stream: it polls fetch (the page's API read, encoded)
// and sends what it returns as an `event` whenever it changed — the first answer too when
// sendFirst (false when the page already shows it) —, "end" once fetch says final or the API
// refuses for good (signed out, forbidden, gone), "problem" on other errors, and a keepalive
// comment when idle so proxies keep the stream open.
func (c *Console) stream(w http.ResponseWriter, r *http.Request, event string, sendFirst bool, fetch func() ([]byte, bool, error)) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, data []byte) bool {
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// The browser reconnects on its own after a dropped stream; a slow retry is enough.
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	keepalive := time.Now()
	var last []byte
	for first := true; ; first = false {
		b, final, err := fetch()
		var ae *APIError
		switch {
		case r.Context().Err() != nil:
			return
		case errors.As(err, &ae) && slices.Contains([]int{http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound}, ae.Status):
			msg, _ := json.Marshal(map[string]string{"error": ae.Error()})
			send("end", msg)
			return
		case err != nil:
			msg, _ := json.Marshal(map[string]string{"error": err.Error()})
			if !send("problem", msg) {
				return
			}
		default:
			if !bytes.Equal(b, last) {
				if (sendFirst || !first) && !send(event, b) {
					return
				}
				last, keepalive = b, time.Now()
			}
			if final {
				send("end", []byte(`{}`))
				return
			}
		}
		if time.Since(keepalive) > 15*time.Second {
			// A comment keeps proxies from closing an idle stream.
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			keepalive = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.closing:
			return
		case <-tick.C:
		}
	}
}
