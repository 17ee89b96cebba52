package collect

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// MaxWebhookEvents bounds the events of one webhook body.
const MaxWebhookEvents = 10_000

func (c *Collectors) startWebhook(ctx context.Context) error {
	c.counter(api.SourceWebhook)
	ln, err := net.Listen("tcp", c.cfg.Webhook)
	if err != nil {
		return fmt.Errorf("--collect-webhook %s: %w", c.cfg.Webhook, err)
	}
	c.Addrs["webhook"] = ln.Addr()
	if len(c.cfg.WebhookKey) < 16 {
		c.log.Warn("OUTPOST_BRIDGE_WEBHOOK_KEY is shorter than 16 characters: anyone on the LAN who guesses it can send events")
	}
	key := sha256.Sum256([]byte(c.cfg.WebhookKey))
	srv := &http.Server{Handler: c.webhookHandler(key), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		MaxHeaderBytes: 16 << 10, BaseContext: func(net.Listener) context.Context { return ctx }}
	c.wg.Add(1)
	go func() { defer c.wg.Done(); _ = srv.Serve(ln) }()
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	stop := context.AfterFunc(ctx, shutdown)
	c.stops = append(c.stops, func() { stop(); shutdown() })
	c.log.Info("webhook collector listening (http, POST JSON events, bearer key)", "addr", ln.Addr().String())
	return nil
}

type webhookAnswer struct {
	Accepted int      `json:"accepted"`
	Errors   []string `json:"errors,omitempty"`
}

// webhookHandler takes POST of one JSON event or an array of them. The key is compared in
// constant time (as hashes: the length leaks nothing either). The answer comes once the
// events are on the bridge's disk.
func (c *Collectors) webhookHandler(key [32]byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST JSON events here (one object or an array) with Authorization: Bearer <key>", http.StatusMethodNotAllowed)
			return
		}
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		g := sha256.Sum256([]byte(given))
		if !ok || subtle.ConstantTimeCompare(g[:], key[:]) != 1 {
			c.stats[api.SourceWebhook].rejected.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="outpost-bridge"`)
			http.Error(w, "missing or wrong bearer key", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, c.cfg.MaxBody))
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			c.reject(r.Context(), api.SourceWebhook, fmt.Sprintf("from %s: a body over %d bytes", r.RemoteAddr, c.cfg.MaxBody), body)
			http.Error(w, fmt.Sprintf("body over %d bytes: send fewer events per request", c.cfg.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		if err != nil {
			http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		ins, problems := decodeEvents(body)
		if len(problems) > 0 {
			c.reject(r.Context(), api.SourceWebhook, fmt.Sprintf("from %s: %s", r.RemoteAddr, strings.Join(problems, "; ")), body)
			writeAnswer(w, http.StatusBadRequest, webhookAnswer{Errors: problems})
			return
		}
		now := c.clock.Now()
		evs := make([]*envelope.Event, len(ins))
		for i, in := range ins {
			evs[i] = in.Event(envelope.NewID(), c.cfg.Site, api.SourceWebhook, now)
		}
		if err := c.store(r.Context(), api.SourceWebhook, evs); err != nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the bridge cannot store events now (outbox full or stopping): retry", http.StatusServiceUnavailable)
			return
		}
		writeAnswer(w, http.StatusAccepted, webhookAnswer{Accepted: len(evs)})
	})
}

func writeAnswer(w http.ResponseWriter, code int, a webhookAnswer) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(a)
}

// decodeEvents reads one event or an array, strictly (an unknown field is named), and
// validates each; problems name the event by index.
func decodeEvents(body []byte) ([]api.EventInput, []string) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, []string{"empty body: send one JSON event or an array of them"}
	}
	var ins []api.EventInput
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var err error
	if trimmed[0] == '[' {
		err = dec.Decode(&ins)
	} else {
		var one api.EventInput
		err = dec.Decode(&one)
		ins = []api.EventInput{one}
	}
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON value")
	}
	if err != nil {
		return nil, []string{"not JSON events: " + err.Error()}
	}
	if len(ins) == 0 {
		return nil, []string{"an empty array: nothing to take"}
	}
	if len(ins) > MaxWebhookEvents {
		return nil, []string{fmt.Sprintf("%d events in one body, at most %d", len(ins), MaxWebhookEvents)}
	}
	var problems []string
	for i, in := range ins {
		if err := in.Validate(); err != nil {
			problems = append(problems, fmt.Sprintf("event %d: %s", i, strings.ReplaceAll(err.Error(), "\n", "; ")))
			if len(problems) == 20 {
				problems = append(problems, "…")
				break
			}
		}
	}
	return ins, problems
}
