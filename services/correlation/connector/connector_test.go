package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/httprequest"
	"github.com/outpost-dev/outpost/services/correlation/connector"
	"github.com/outpost-dev/outpost/services/correlation/poll"
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC) // the tool's times, not the test's

func tool() api.Connector {
	return api.Connector{Name: "tool", Site: "dc1", URL: "http://127.0.0.1:9/events", Interval: "1m", Records: "data.events",
		Fields:     map[string]string{"id": "id", "node": "host", "type": "check", "severity": "level", "message": "summary", "time": "at", "resource": "meta.disks[0]"},
		Additional: map[string]string{"ticket": "meta.ticket"},
		Severities: map[string]string{"crit": "critical", "5": "critical", "ok": "clear"}, SinceParam: "since"}
}

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// Map: every mapped field where the definition says, severities through the map, and a
// record that cannot be mapped rejected with a reason naming what and where.
func TestMap(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	noTime := tool()
	delete(noTime.Fields, "time")
	byKey := tool()
	delete(byKey.Fields, "node")
	byKey.Fields["message_key"] = "key"
	byKey.Type = "ext"
	delete(byKey.Fields, "type")
	for _, c := range []struct {
		name    string
		def     api.Connector
		rec     string
		want    envelope.Event // compared on the fields set here
		id      string
		wantErr []string
	}{
		{name: "every field", def: tool(),
			rec:  `{"id":"e1","host":"db-1","check":"disk","level":"crit","summary":"disk full","at":"2026-11-30T09:00:00Z","meta":{"disks":["/var"],"ticket":42}}`,
			want: envelope.Event{Node: "db-1", Type: "disk", Severity: "critical", Message: "disk full", Resource: "/var", Time: t0}, id: "e1"},
		{name: "a numeric severity through the map, Unix seconds", def: tool(),
			rec:  `{"id":7,"host":"db-1","check":"disk","level":5,"at":1795942800}`,
			want: envelope.Event{Node: "db-1", Severity: "critical", Time: time.Unix(1795942800, 0).UTC()}, id: "7"},
		{name: "Unix milliseconds", def: tool(), rec: `{"id":"m","host":"h","at":1795942800500}`,
			want: envelope.Event{Node: "h", Time: time.Unix(1795942800, 5e8).UTC()}, id: "m"},
		{name: "the tool's ok closes", def: tool(), rec: `{"id":"e4","host":"db-1","level":"ok","at":"2026-11-30T09:01:00Z"}`,
			want: envelope.Event{Node: "db-1", Severity: "clear", Time: t0.Add(time.Minute)}, id: "e4"},
		{name: "an unmapped severity of ours is taken, lower-cased", def: tool(), rec: `{"id":"w","host":"h","level":"Warning","at":"2026-11-30T09:00:00Z"}`,
			want: envelope.Event{Node: "h", Severity: "warning", Time: t0}, id: "w"},
		{name: "no time field: the poll's time", def: noTime, rec: `{"id":"n","host":"h"}`,
			want: envelope.Event{Node: "h", Type: "tool", Time: now}, id: "n"},
		{name: "message_key instead of node, the definition's type", def: byKey, rec: `{"id":"k","key":"svc-a","at":"2026-11-30T09:00:00Z"}`,
			want: envelope.Event{MessageKey: "svc-a", Type: "ext", Time: t0}, id: "k"},
		{name: "no node", def: tool(), rec: `{"id":"e3","host":"","check":"http","at":"2026-11-30T09:00:00Z"}`,
			wantErr: []string{"no node (host) and no message_key"}, id: "e3"},
		{name: "a severity neither mapped nor ours", def: tool(), rec: `{"id":"x","host":"h","level":"awful","at":"2026-11-30T09:00:00Z"}`,
			wantErr: []string{`severity "awful": not one of`, "map it in severities"}, id: "x"},
		{name: "an unreadable time", def: tool(), rec: `{"id":"x","host":"h","at":"yesterday"}`,
			wantErr: []string{`time: "yesterday": want RFC 3339 or Unix seconds`}, id: "x"},
		{name: "a missing time: the watermark needs it", def: tool(), rec: `{"id":"x","host":"h"}`,
			wantErr: []string{"time: no at in the record"}, id: "x"},
		{name: "an object where a value is wanted", def: tool(), rec: `{"id":"x","host":{"name":"h"},"at":"2026-11-30T09:00:00Z"}`,
			wantErr: []string{"node: host is map[string]interface {}, not a value"}, id: "x"},
		{name: "every problem at once", def: tool(), rec: `{"id":"x","level":"awful","at":"later"}`,
			wantErr: []string{"no node", "severity", "time"}, id: "x"},
		{name: "not an object", def: tool(), rec: `"just text"`, wantErr: []string{"not an object"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, id, err := connector.Map(c.def, decode(t, c.rec), now)
			if c.wantErr != nil {
				if err == nil {
					t.Fatalf("mapped %+v, want rejected naming %q", ev, c.wantErr)
				}
				for _, w := range c.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("reason %q, want it to name %q", err, w)
					}
				}
				if c.id != "" && id != c.id {
					t.Fatalf("id %q, want %q: a rejected record is still known by its id", id, c.id)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if id != c.id || ev.Source != "connector-"+c.def.Name || ev.Site != "dc1" || !strings.HasPrefix(ev.ID, "conn-") || ev.Fields["connector"] != c.def.Name {
				t.Fatalf("event %+v id %q: want record id %q, source connector-%s, site dc1, an event id", ev, id, c.id, c.def.Name)
			}
			w := c.want
			if w.Type == "" && c.def.Fields["type"] != "" {
				w.Type = ev.Type // not what this row is about
			}
			if ev.Node != w.Node || ev.Type != w.Type || ev.Severity != w.Severity || ev.Message != w.Message || ev.Resource != w.Resource ||
				ev.MessageKey != w.MessageKey || !ev.Time.Equal(w.Time) {
				t.Fatalf("event %+v, want %+v", ev, w)
			}
		})
	}
	// Additional fields, and ids: the same record is the same event id (idempotent); a
	// record without an id field is known by a hash of itself.
	ev, _, err := connector.Map(tool(), decode(t, `{"id":"e1","host":"h","at":"2026-11-30T09:00:00Z","meta":{"ticket":"T-9"}}`), now)
	ev2, _, _ := connector.Map(tool(), decode(t, `{"at":"2026-11-30T09:00:00Z","host":"h","id":"e1","meta":{"ticket":"T-9"}}`), now.Add(time.Hour))
	if err != nil || ev.Fields["ticket"] != "T-9" || ev.ID != ev2.ID {
		t.Fatalf("event %+v (%v) and %+v: want additional ticket T-9 and one id", ev, err, ev2)
	}
	anon := tool()
	delete(anon.Fields, "id")
	_, a1, _ := connector.Map(anon, decode(t, `{"host":"h","at":"2026-11-30T09:00:00Z"}`), now)
	_, a2, _ := connector.Map(anon, decode(t, `{"at":"2026-11-30T09:00:00Z","host":"h"}`), now)
	_, a3, _ := connector.Map(anon, decode(t, `{"host":"h2","at":"2026-11-30T09:00:00Z"}`), now)
	if a1 == "" || a1 != a2 || a1 == a3 {
		t.Fatalf("hash ids %q %q %q: want one record one id, another record another", a1, a2, a3)
	}
}

func result(status int, body string, truncated bool) *envelope.Result {
	d, _ := json.Marshal(httprequest.Result{URL: "http://127.0.0.1:9/events", Status: status, Body: probes.Blob{Text: body, Truncated: truncated}})
	return &envelope.Result{Kind: httprequest.Kind, Status: envelope.StatusOK, Agent: "br1", Data: d}
}

// Records: where the records are in an answer, and an answer that has none says why.
func TestRecords(t *testing.T) {
	failed := &envelope.Result{Kind: httprequest.Kind, Status: envelope.StatusError, Agent: "br1", Error: &envelope.Error{Code: "CONNECT", Message: "refused"}}
	for _, c := range []struct {
		name, records string
		r             *envelope.Result
		n             int
		wantErr       string
	}{
		{"a list under a path", "data.events", result(200, `{"data":{"events":[{"id":1},{"id":2}]}}`, false), 2, ""},
		{"the answer is the list", "", result(200, `[{"id":1}]`, false), 1, ""},
		{"one record", "data.events", result(200, `{"data":{"events":{"id":1}}}`, false), 1, ""},
		{"null: none", "data.events", result(200, `{"data":{"events":null}}`, false), 0, ""},
		{"a JSON pointer", "/data/events", result(200, `{"data":{"events":[{"id":1}]}}`, false), 1, ""},
		{"not there", "data.events", result(200, `{"data":{}}`, false), 0, `no "data.events" in the answer`},
		{"a value, not records", "data", result(200, `{"data":5}`, false), 0, "neither a list of records nor one record"},
		{"not JSON", "", result(200, `<html>`, false), 0, "the answer is not JSON"},
		{"an error status", "", result(503, `[]`, false), 0, "503 Service Unavailable"},
		{"cut short", "", result(200, `[{"id":1}`, true), 0, "ask the API for fewer records"},
		{"the probe failed", "", failed, 0, "refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := tool()
			d.Records = c.records
			recs, err := connector.Records(d, c.r)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("records %v err %v, want %q", recs, err, c.wantErr)
				}
				return
			}
			if err != nil || len(recs) != c.n {
				t.Fatalf("records %v err %v, want %d", recs, err, c.n)
			}
		})
	}
}

// The watermark over polls of one connector (a real JetStream, a fake clock): each record is
// one event however many polls see it; a record at the watermark's time is told apart by id;
// a rejected record with a time is rejected once, one without is rejected again each poll
// (and counted each time), and nothing older than the watermark comes back.
func TestResultWatermark(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "conn-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("conn-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.DefaultLimits())); err != nil {
		t.Fatal(err)
	}
	fc := clock.NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	c, err := connector.New(ctx, connector.Deps{JS: js, Clock: fc, Pub: bus.NewPublisher(js, envelope.ServiceSource(api.Service), nil)})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	t.Cleanup(func() { rcancel(); <-done })
	if _, err := c.Add(ctx, tool()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(c.Jobs()) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the stored connector never reached its watch: no job")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rec := func(id, host, level, at string) string {
		return fmt.Sprintf(`{"id":%q,"host":%q,"level":%q,"at":%q}`, id, host, level, at)
	}
	at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339) }
	e1, e2, e3 := rec("e1", "a", "crit", at(0)), rec("e2", "b", "crit", at(time.Second)), rec("e3", "c", "crit", at(time.Second))
	e4 := rec("e4", "d", "crit", at(time.Second))
	bad := rec("bad", "e", "awful", at(2*time.Second)) // rejected, but held by its time
	e5 := rec("e5", "f", "crit", at(2*time.Second))
	noTime := `{"id":"nt","host":"g","level":"crit"}` // rejected each poll: nothing to hold it by
	late := rec("late", "h", "crit", at(-time.Hour))  // older than the watermark: not taken
	var events, skipped, rejected int64
	for i, p := range []struct {
		name                      string
		recs                      []string
		events, skipped, rejected int64
		watermark                 time.Duration
		ids                       []string
		published                 []string // record ids whose events this poll published
	}{
		{"first poll takes all", []string{e1, e2, e3}, 3, 0, 0, time.Second, []string{"e2", "e3"}, []string{"e1", "e2", "e3"}},
		{"the same answer again", []string{e1, e2, e3}, 0, 3, 0, time.Second, []string{"e2", "e3"}, nil},
		{"a new record at the watermark's time", []string{e2, e3, e4}, 1, 2, 0, time.Second, []string{"e2", "e3", "e4"}, []string{"e4"}},
		{"newer records, one unmappable, one without time", []string{e4, bad, e5, noTime}, 1, 1, 2, 2 * time.Second, []string{"bad", "e5"}, []string{"e5"}},
		{"again: the timeless one again, the late one not", []string{bad, e5, noTime, late}, 0, 3, 1, 2 * time.Second, []string{"bad", "e5"}, nil},
		{"an empty answer changes nothing", nil, 0, 0, 0, 2 * time.Second, []string{"bad", "e5"}, nil},
	} {
		fc.Advance(time.Minute)
		ref := poll.Ref{Owner: connector.Owner, Name: "tool", Target: "127.0.0.1", Slot: fc.Now().Truncate(time.Minute)}
		body := `{"data":{"events":[` + strings.Join(p.recs, ",") + `]}}`
		before := c.Events.Load()
		if err := c.Result(ctx, ref, result(200, body, false)); err != nil {
			t.Fatalf("poll %d (%s): %v", i, p.name, err)
		}
		events, skipped, rejected = events+p.events, skipped+p.skipped, rejected+p.rejected
		l, err := c.List(ctx, pageAll())
		if err != nil || len(l.Items) != 1 || l.Items[0].State == nil {
			t.Fatalf("poll %d (%s): list %+v %v", i, p.name, l.Items, err)
		}
		st := *l.Items[0].State
		ids := slices.Clone(st.IDs)
		slices.Sort(ids)
		if st.Polls != int64(i+1) || st.Events != events || st.Skipped != skipped || st.Rejected != rejected ||
			!st.Watermark.Equal(t0.Add(p.watermark)) || !slices.Equal(ids, p.ids) || st.LastError != "" {
			t.Fatalf("poll %d (%s): state %+v, want %d polls, %d events, %d skipped, %d rejected, watermark %s, ids %v",
				i, p.name, st, i+1, events, skipped, rejected, t0.Add(p.watermark), p.ids)
		}
		if got := c.Events.Load() - before; got != int64(len(p.published)) {
			t.Fatalf("poll %d (%s): %d events counted, want %d", i, p.name, got, len(p.published))
		}
	}
	// What reached EVENTS: each published record once, under its own subject; the rejects in the DLQ with their reason.
	if n := streamCount(t, ctx, js, bus.StreamEvents, "event.hub.connector-tool"); n != 5 {
		t.Fatalf("EVENTS holds %d events of the connector, want 5 (e1..e5)", n)
	}
	if n := streamCount(t, ctx, js, bus.StreamDLQ, ""); n < 2 {
		t.Fatalf("the DLQ holds %d rejected records, want at least 2 (bad, the timeless one)", n)
	}
	// The next poll asks for what is newer than the watermark.
	var hp httprequest.Params
	want := "since=" + url.QueryEscape(t0.Add(2*time.Second).Format(time.RFC3339Nano))
	if err := json.Unmarshal(c.Jobs()[0].Params, &hp); err != nil || !strings.Contains(hp.URL, want) {
		t.Fatalf("the next poll's URL %q (%v), want %s", hp.URL, err, want)
	}
}

func pageAll() page.Request { return page.Request{Limit: 1000} }

// streamCount is how many messages stream holds (on subject, when given).
func streamCount(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if subject == "" {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}
