package collect

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"go.uber.org/goleak"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// memSink keeps what the collectors hand over (the bridge's outbox does this for real; the
// e2e test goes through it).
type memSink struct {
	mu      sync.Mutex
	events  []*envelope.Event
	rejects []string
	batches []int // events of each Events call
}

func (s *memSink) Events(_ context.Context, source string, evs []*envelope.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		if ev.Source != source {
			return fmt.Errorf("event of source %q handed over as %q", ev.Source, source)
		}
		if err := ev.Validate(); err != nil {
			return err
		}
	}
	s.events = append(s.events, evs...)
	s.batches = append(s.batches, len(evs))
	return nil
}

func (s *memSink) Reject(_ context.Context, source, reason string, sample []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(sample) > SampleMax {
		reason = "SAMPLE TOO BIG: " + reason
	}
	s.rejects = append(s.rejects, source+": "+reason)
}

func (s *memSink) snapshot() ([]*envelope.Event, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*envelope.Event(nil), s.events...), append([]string(nil), s.rejects...)
}

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start starts the collectors on a fake clock that fires batches' linger timers as soon as
// they are armed, so tests of what is collected need not care how it is batched.
func start(t *testing.T, cfg Config) (*Collectors, *memSink) {
	t.Helper()
	c, sink, clk := startFake(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for clk.BlockUntil(ctx, 1) {
			clk.Advance(DefaultBatchConfig().Linger)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return c, sink
}

// startFake starts the collectors on a fake clock that moves only when the test moves it.
func startFake(t *testing.T, cfg Config) (*Collectors, *memSink, *clock.Fake) {
	t.Helper()
	cfg.Site = "dc1"
	clk := clock.NewFake(t0)
	cfg.Clock = clk
	sink := &memSink{}
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Start(ctx, cfg, sink)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); c.Close() })
	return c, sink, clk
}

// waitEvents waits for n events and returns them.
func waitEvents(t *testing.T, s *memSink, n int) []*envelope.Event {
	t.Helper()
	var evs []*envelope.Event
	eventually(t, 10*time.Second, func() error {
		evs, _ = s.snapshot()
		if len(evs) != n {
			return fmt.Errorf("%d events, want %d", len(evs), n)
		}
		return nil
	})
	return evs
}

func TestSyslogOverUDP(t *testing.T) {
	c, sink := start(t, Config{Syslog: "127.0.0.1:0"})
	conn, err := net.Dial("udp", c.Addrs["syslog/udp"].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lines := []string{
		`<27>1 2026-03-02T08:59:00Z web-01 nginx 42 ID7 [origin ip="10.0.0.1"] upstream timed out`,
		`<34>Mar  2 08:58:00 sw-1 kernel: eth0 link down`,
	}
	for _, l := range lines {
		if _, err := conn.Write([]byte(l + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	evs := waitEvents(t, sink, 2)
	byNode := map[string]*envelope.Event{}
	for _, ev := range evs {
		byNode[ev.Node] = ev
	}
	tests := []struct {
		node, typ, resource, severity, message string
	}{
		{"web-01", "nginx", "ID7", api.SeverityMajor, "upstream timed out"},
		{"sw-1", "kernel", "", api.SeverityCritical, "eth0 link down"},
	}
	for _, tt := range tests {
		ev := byNode[tt.node]
		if ev == nil {
			t.Errorf("no event for %s: %+v", tt.node, evs)
			continue
		}
		if ev.Type != tt.typ || ev.Resource != tt.resource || ev.Severity != tt.severity || ev.Message != tt.message || ev.Site != "dc1" {
			t.Errorf("%s: %+v", tt.node, ev)
		}
	}
	if ev := byNode["web-01"]; ev != nil && ev.Fields["sd.origin.ip"] != "10.0.0.1" {
		t.Errorf("structured data not kept: %v", ev.Fields)
	}
	if ev := byNode["sw-1"]; ev != nil && ev.Time.Year() != 2026 {
		t.Errorf("an RFC 3164 time takes the clock's year: %s", ev.Time)
	}
}

// Both RFC 6587 framings on one listener, with bad frames between good ones: each bad one is
// counted and kept with its reason, and the stream goes on.
func TestSyslogOverTCPFramingsAndBadInput(t *testing.T) {
	c, sink := start(t, Config{Syslog: "127.0.0.1:0", MaxMessage: 1024})
	msg := func(text string) string { return "<11>1 2026-03-02T09:00:00Z host-a app - - - " + text }
	frame := func(m string) string { return fmt.Sprintf("%d %s", len(m), m) }
	tests := []struct {
		name    string
		stream  string
		good    int
		rejects int
	}{
		{"newline framing", msg("one") + "\n" + msg("two") + "\n", 2, 0},
		{"octet counting", frame(msg("three")) + frame(msg("four")), 2, 0},
		{"malformed line then a good one", "\x00\xff<<<not syslog\n" + msg("after-bad") + "\n", 1, 1},
		{"oversize line then a good one", strings.Repeat("A", 5000) + "\n" + msg("after-long") + "\n", 1, 1},
		{"oversize frame then a good one", frame("<11>1 - h a - - - "+strings.Repeat("B", 3000)) + frame(msg("after-frame")), 1, 1},
	}
	wantEvents, wantRejects := 0, 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", c.Addrs["syslog/tcp"].String())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Write([]byte(tt.stream)); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			wantEvents += tt.good
			wantRejects += tt.rejects
			eventually(t, 10*time.Second, func() error {
				evs, rej := sink.snapshot()
				if len(evs) != wantEvents || len(rej) != wantRejects {
					return fmt.Errorf("%d events, %d rejects; want %d, %d (rejects: %q)", len(evs), len(rej), wantEvents, wantRejects, rej)
				}
				return nil
			})
		})
	}
	got := c.Counts()[api.SourceSyslog]
	if got.Accepted != int64(wantEvents) || got.Rejected != int64(wantRejects) {
		t.Errorf("counts %+v, want %d accepted, %d rejected", got, wantEvents, wantRejects)
	}
	_, rej := sink.snapshot()
	for _, r := range rej {
		if strings.HasPrefix(r, "SAMPLE TOO BIG") || !strings.Contains(r, "from 127.0.0.1") {
			t.Errorf("reject %q: want the sender and a reason, and a sample cut to %d bytes", r, SampleMax)
		}
	}
}

func TestTraps(t *testing.T) {
	c, sink := start(t, Config{Traps: "127.0.0.1:0"})
	addr := c.Addrs["trap"].(*net.UDPAddr)
	send := func(version gosnmp.SnmpVersion, trap gosnmp.SnmpTrap) {
		t.Helper()
		g := &gosnmp.GoSNMP{Target: "127.0.0.1", Port: uint16(addr.Port), Community: "public", Version: version,
			Timeout: 2 * time.Second, Retries: 0, MaxOids: gosnmp.MaxOids}
		if err := g.Connect(); err != nil {
			t.Fatal(err)
		}
		defer g.Conn.Close()
		if _, err := g.SendTrap(trap); err != nil {
			t.Fatal(err)
		}
	}
	send(gosnmp.Version2c, gosnmp.SnmpTrap{Variables: []gosnmp.SnmpPDU{
		{Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(100)},
		{Name: ".1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: ".1.3.6.1.6.3.1.1.5.3"},
		{Name: ".1.3.6.1.2.1.2.2.1.1.7", Type: gosnmp.Integer, Value: 7},
	}})
	send(gosnmp.Version1, gosnmp.SnmpTrap{Enterprise: ".1.3.6.1.4.1.8072", AgentAddress: "127.0.0.9", GenericTrap: 0,
		Variables: []gosnmp.SnmpPDU{{Name: ".1.3.6.1.2.1.1.5.0", Type: gosnmp.OctetString, Value: "sw-1"}}})
	send(gosnmp.Version2c, gosnmp.SnmpTrap{Variables: []gosnmp.SnmpPDU{
		{Name: ".1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: ".1.3.6.1.4.1.9.9.41.2.0.1"},
	}})
	evs := waitEvents(t, sink, 3)
	tests := []struct{ node, typ, resource, severity, msgPart string }{
		{"127.0.0.1", "link", "ifIndex 7", api.SeverityMajor, "linkDown"},
		{"127.0.0.9", "restart", "", api.SeverityWarning, "coldStart"},
		{"127.0.0.1", "1.3.6.1.4.1.9.9.41.2.0.1", "", api.SeverityWarning, "trap 1.3.6.1.4.1.9.9.41.2.0.1"},
	}
	for _, tt := range tests {
		found := false
		for _, ev := range evs {
			if ev.Node == tt.node && ev.Type == tt.typ && ev.Resource == tt.resource && ev.Severity == tt.severity && strings.Contains(ev.Message, tt.msgPart) {
				found = true
			}
		}
		if !found {
			t.Errorf("no %s event from %s among %v", tt.msgPart, tt.node, describe(evs))
		}
	}
	// A packet that is not SNMP is counted; the listener goes on.
	conn, _ := net.Dial("udp", addr.String())
	_, _ = conn.Write([]byte("not snmp at all"))
	conn.Close()
	eventually(t, 10*time.Second, func() error {
		if got := c.Counts()[api.SourceTrap]; got.Rejected != 1 || got.Accepted != 3 {
			return fmt.Errorf("counts %+v, want 3 accepted, 1 rejected", got)
		}
		return nil
	})
}

func describe(evs []*envelope.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "[%s %s %q %s %q] ", ev.Node, ev.Type, ev.Resource, ev.Severity, ev.Message)
	}
	return b.String()
}

func TestWebhook(t *testing.T) {
	const key = "a-webhook-key-of-some-length"
	c, sink := start(t, Config{Webhook: "127.0.0.1:0", WebhookKey: key, MaxBody: 64 << 10})
	url := "http://" + c.Addrs["webhook"].String() + "/"
	post := func(auth, body string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	ev := `{"node":"n1","type":"cpu","resource":"cpu0","metric":"load","severity":"major","message":"high","additional":{"value":97.5,"unit":"%"}}`
	tests := []struct {
		name     string
		auth     string
		body     string
		code     int
		accepted int
		rejected int
	}{
		{"one object", key, ev, http.StatusAccepted, 1, 0},
		{"an array", key, "[" + ev + "," + ev + "," + ev + "]", http.StatusAccepted, 3, 0},
		{"no key", "", ev, http.StatusUnauthorized, 0, 1},
		{"wrong key", key + "x", ev, http.StatusUnauthorized, 0, 1},
		{"unknown severity", key, `{"node":"n1","severity":"loud"}`, http.StatusBadRequest, 0, 1},
		{"unknown field", key, `{"node":"n1","sevrity":"major"}`, http.StatusBadRequest, 0, 1},
		{"not JSON", key, `<xml/>`, http.StatusBadRequest, 0, 1},
		{"oversize", key, `{"node":"x","message":"` + strings.Repeat("A", 100<<10) + `"}`, http.StatusRequestEntityTooLarge, 0, 1},
		{"after all that, still taking events", key, ev, http.StatusAccepted, 1, 0},
	}
	var accepted, rejected int64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := post(tt.auth, tt.body); code != tt.code {
				t.Errorf("status %d, want %d", code, tt.code)
			}
			accepted += int64(tt.accepted)
			rejected += int64(tt.rejected)
			if got := c.Counts()[api.SourceWebhook]; got.Accepted != accepted || got.Rejected != rejected {
				t.Errorf("counts %+v, want %d accepted, %d rejected", got, accepted, rejected)
			}
		})
	}
	evs, rej := sink.snapshot()
	if len(evs) != 5 {
		t.Fatalf("%d events stored, want 5", len(evs))
	}
	e := evs[0]
	if e.Node != "n1" || e.Type != "cpu" || e.Severity != "major" || e.Site != "dc1" || e.Fields["value"] != "97.5" || e.Fields["unit"] != "%" || !e.Time.Equal(t0) {
		t.Errorf("event %+v", e)
	}
	// Refused keys carry no event to keep; bad bodies are kept with their reason.
	if len(rej) != 4 || !strings.Contains(rej[3], "over 65536 bytes") {
		t.Errorf("rejects %q", rej)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405", resp.StatusCode)
	}
}

func TestConfigValidate(t *testing.T) {
	err := Config{Syslog: "nope", Webhook: "127.0.0.1:1"}.Validate()
	for _, want := range []string{"--collect-syslog", "OUTPOST_BRIDGE_WEBHOOK_KEY"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %s", err, want)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("no collector is valid: %v", err)
	}
}
