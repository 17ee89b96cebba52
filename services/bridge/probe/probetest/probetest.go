// Package probetest is the conformance suite every probe kind passes: one table of cases
// per kind — success, bad credentials, stalled target, wrong protocol, cancellation,
// oversize output, target outside the allow-list — run against real servers (the lab,
// PostgreSQL). Run checks, for every case and on top of the case's own checks, what every
// kind owes the bridge:
//
//   - the outcome has the expected error code (or none), and errors are *probe.Error or
//     context errors;
//   - a denied target is never dialled (Settings.Dial counts connections);
//   - a cancelled probe returns promptly with "canceled";
//   - every chunk and the final data marshal to JSON within Settings.MaxOutput;
//   - no secret of the request's credentials appears in a result, a chunk, an error or a
//     log line, in clear or base64-encoded (alone or as the user:password of basic auth);
//   - a case marked NoDial (a refusal) never opened a connection;
//   - params with an unknown field are refused (bad_params, naming the field) before any
//     connection: every kind validates against its contract's schema.
//
// A case that cannot apply to a kind (bad credentials for a kind without credentials) is
// listed with NA and the reason, so the table shows every kind answers every question.
package probetest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// The case names every kind answers.
const (
	Success       = "success"
	BadCreds      = "bad_credentials"
	Stalled       = "stalled_target"
	WrongProtocol = "wrong_protocol"
	Cancel        = "cancellation"
	Oversize      = "oversize_output"
	Denied        = "outside_allow_list"
)

// Names are the required cases, in order.
var Names = []string{Success, BadCreds, Stalled, WrongProtocol, Cancel, Oversize, Denied}

// Outcome is what a run produced.
type Outcome struct {
	Data    any
	Err     error
	Chunks  []any
	Dials   int64
	Elapsed time.Duration
	Logs    string
}

// Case is one row of the table.
type Case struct {
	Name string // one of Names; variants may add a suffix ("success/https")
	// NA, when set, says why the case does not apply; nothing runs.
	NA string
	// Config adjusts the kind's default config (nil: default).
	Config func(cfg any) any
	Req    probe.Request
	// Timeout is the probe's deadline (default 20 s); CancelAfter cancels it earlier.
	Timeout     time.Duration
	CancelAfter time.Duration
	// NoEmit runs without a stream (emit nil): the final data must carry everything.
	NoEmit bool
	// EmitDelay makes every Emit block this long (a slow outbox).
	EmitDelay time.Duration
	// MaxOutput for this case (default 256 KiB).
	MaxOutput int
	// DenyAll makes the allow-list refuse everything.
	DenyAll bool
	// WantCode is the expected error code; "" expects success. Several codes may be
	// given separated by "|".
	WantCode string
	// Check inspects a successful (or failed) outcome.
	Check func(t *testing.T, o Outcome)
	// Secrets that must not appear anywhere (the credentials' are added).
	Secrets []string
	// NoDial: the probe must be refused before any connection (a credential of the wrong
	// type, or one that would go over plaintext).
	NoDial bool
	// Now is the probe's clock (certificate verification); nil: time.Now. The lab's
	// certificates are valid around its reference day, not necessarily today.
	Now func() time.Time
}

// Suite is the table of one kind.
type Suite struct {
	Factory probe.Factory
	// Allowed is the site's allow-list for this suite (e.g. the lab range).
	Allowed func(netip.Addr) bool
	Cases   []Case
}

// Run runs every case of a suite as a parallel subtest, and fails when a required case
// is missing from the table.
func Run(t *testing.T, s Suite) {
	t.Helper()
	have := map[string]bool{}
	for _, c := range s.Cases {
		base, _, _ := strings.Cut(c.Name, "/")
		have[base] = true
	}
	for _, n := range Names {
		if !have[n] {
			t.Errorf("%s: the conformance table has no %q case (give one, or one with NA and the reason)", s.Factory.Spec().Kind, n)
		}
	}
	for _, c := range append(s.Cases, paramsCases(s)...) {
		t.Run(c.Name, func(t *testing.T) {
			if c.NA != "" {
				t.Skipf("n/a: %s", c.NA)
			}
			t.Parallel()
			o := Exec(t, s, c)
			verify(t, s, c, o)
		})
	}
}

// paramsCases are asked of every kind: its params are checked against its contract's
// schema (libs/probes/<kind>) before anything is dialled, an unknown field refused by name.
func paramsCases(s Suite) []Case {
	spec := s.Factory.Spec()
	return []Case{{
		Name: "params/unknown-field", Req: probe.Request{Target: "127.0.0.1", Params: json.RawMessage(`{"no_such_param": 1}`)},
		WantCode: probe.CodeBadParams, NoDial: true,
		Check: func(t *testing.T, o Outcome) {
			want := "params.no_such_param: unknown field (known: " + strings.Join(spec.ParamsSchema().Order(), ", ")
			if o.Err == nil || !strings.Contains(o.Err.Error(), want) {
				t.Errorf("error %v, want %q", o.Err, want)
			}
		},
	}}
}

// Settings returns the settings a bridge would give: a Dial that counts connections and
// refuses addresses outside allowed (as the bridge's guarded dialer does), a logger into
// logs, and the output cap.
func Settings(allowed func(netip.Addr) bool, maxOutput int, logs io.Writer) (probe.Settings, *atomic.Int64) {
	var dials atomic.Int64
	d := &net.Dialer{KeepAlive: -1}
	allow := func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && allowed(a.Unmap())
	}
	set := probe.Settings{
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		MaxOutput: maxOutput,
		Allowed:   allow,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			dials.Add(1)
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return nil, err
			}
			if ip := net.ParseIP(host); ip == nil || !allow(ip) {
				return nil, probe.Errorf(probe.CodeDenied, "the bridge refused to dial %s", address)
			}
			return d.DialContext(ctx, network, address)
		},
	}
	return set, &dials
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Exec runs one case and returns what happened.
func Exec(t *testing.T, s Suite, c Case) Outcome {
	t.Helper()
	maxOut := c.MaxOutput
	if maxOut == 0 {
		maxOut = 256 << 10
	}
	allowed := s.Allowed
	if c.DenyAll || allowed == nil {
		allowed = func(netip.Addr) bool { return false }
	}
	logs := &syncBuffer{}
	set, dials := Settings(allowed, maxOut, logs)
	set.Now = c.Now
	if set.Now == nil {
		set.Now = time.Now
	}
	cfg := s.Factory.DefaultConfig()
	if c.Config != nil {
		cfg = c.Config(cfg)
	}
	r, err := s.Factory.Create(context.Background(), set, cfg)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if c.CancelAfter > 0 {
		stop := time.AfterFunc(c.CancelAfter, cancel)
		defer stop.Stop()
	}
	var mu sync.Mutex
	var chunks []any
	var emit probe.Emit
	if !c.NoEmit {
		emit = func(ctx context.Context, data any) error {
			mu.Lock()
			chunks = append(chunks, data)
			mu.Unlock()
			if c.EmitDelay > 0 {
				select {
				case <-time.After(c.EmitDelay):
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
	}
	wall := clock.Real() // how long a case took, cancel and timeout cases included, is wall time
	start := wall.Now()
	data, err := r.Run(ctx, c.Req, emit)
	o := Outcome{Data: data, Err: err, Elapsed: wall.Since(start), Dials: dials.Load(), Logs: logs.String()}
	mu.Lock()
	o.Chunks = chunks
	mu.Unlock()
	return o
}

func verify(t *testing.T, s Suite, c Case, o Outcome) {
	t.Helper()
	got := ""
	if o.Err != nil {
		got = probe.CodeOf(o.Err)
		var pe *probe.Error
		if !errors.As(o.Err, &pe) && !errors.Is(o.Err, context.Canceled) && !errors.Is(o.Err, context.DeadlineExceeded) {
			t.Errorf("error %v (%T) is neither a *probe.Error nor a context error", o.Err, o.Err)
		}
	}
	want := strings.Split(c.WantCode, "|")
	ok := false
	for _, w := range want {
		ok = ok || got == w
	}
	if !ok {
		t.Fatalf("outcome %q (%v), want %q; data %s", got, o.Err, c.WantCode, short(o.Data))
	}
	if strings.HasPrefix(c.Name, Denied) && o.Dials != 0 {
		t.Errorf("a denied probe dialled %d times", o.Dials)
	}
	if c.NoDial && o.Dials != 0 {
		t.Errorf("a probe refused before sending anything dialled %d times", o.Dials)
	}
	if c.CancelAfter > 0 && o.Elapsed > c.CancelAfter+3*time.Second {
		t.Errorf("cancelled after %s, returned after %s", c.CancelAfter, o.Elapsed)
	}
	maxOut := c.MaxOutput
	if maxOut == 0 {
		maxOut = 256 << 10
	}
	secrets := append([]string(nil), c.Secrets...)
	for _, cr := range c.Req.Credentials {
		secrets = append(secrets, cr.Secret)
		if cr.Username != "" && len(cr.Secret) >= 4 {
			secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(cr.Username+":"+cr.Secret)))
		}
		for k, v := range cr.Fields {
			if strings.Contains(k, "password") || strings.Contains(k, "key") {
				secrets = append(secrets, v)
			}
		}
	}
	for _, sec := range slices.Clone(secrets) {
		if len(sec) >= 4 {
			secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(sec)))
		}
	}
	check := func(what, text string) {
		for _, sec := range secrets {
			if len(sec) >= 4 && strings.Contains(text, sec) {
				t.Errorf("a secret appears in the %s", what)
			}
		}
	}
	for i, ch := range o.Chunks {
		b, err := json.Marshal(ch)
		if err != nil {
			t.Fatalf("chunk %d does not marshal: %v", i, err)
		}
		if len(b) > maxOut {
			t.Errorf("chunk %d is %d bytes, beyond MaxOutput %d", i, len(b), maxOut)
		}
		check(fmt.Sprintf("chunk %d", i), string(b))
	}
	if o.Data != nil {
		b, err := json.Marshal(o.Data)
		if err != nil {
			t.Fatalf("data does not marshal: %v", err)
		}
		if len(b) > maxOut {
			t.Errorf("final data is %d bytes, beyond MaxOutput %d", len(b), maxOut)
		}
		check("data", string(b))
	}
	if o.Err != nil {
		check("error", o.Err.Error())
	}
	check("logs", o.Logs)
	if c.Check != nil {
		c.Check(t, o)
	}
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 600 {
		b = append(b[:600], "…"...)
	}
	return string(b)
}

// Params marshals params for a request.
func Params(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode turns a result (or chunk) into T through JSON, as the hub would see it.
func Decode[T any](t *testing.T, v any) T {
	t.Helper()
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal into %T: %v", out, err)
	}
	return out
}
