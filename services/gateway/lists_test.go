package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/services/gateway"
	"github.com/outpost-dev/outpost/services/gateway/tokens"
)

// walk follows next_cursor from the first page of path, limit items at a time, and returns
// every page's items (under field) in order.
func walk(t *testing.T, e *env, token, path, field string, limit int) ([]json.RawMessage, int) {
	t.Helper()
	var all []json.RawMessage
	cursor, pages := "", 0
	for {
		q := url.Values{"limit": {fmt.Sprint(limit)}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		resp, body := e.get(t, path+sep+q.Encode(), token)
		if resp.StatusCode != 200 {
			t.Fatalf("%s page %d: %d %s", path, pages+1, resp.StatusCode, body)
		}
		var p map[string]json.RawMessage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		var items []json.RawMessage
		if err := json.Unmarshal(p[field], &items); err != nil || items == nil {
			t.Fatalf("%s: field %q is not a list: %s", path, field, body)
		}
		if len(items) > limit {
			t.Fatalf("%s: %d items on a page of %d", path, len(items), limit)
		}
		all = append(all, items...)
		pages++
		var next string
		_ = json.Unmarshal(p["next_cursor"], &next)
		if next == "" {
			return all, pages
		}
		cursor = next
	}
}

func TestTokensAndAuditPage(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	for i := range 6 {
		if _, _, err := e.toks.Create(ctx, fmt.Sprintf("t%d", i), tokens.RoleViewer); err != nil {
			t.Fatal(err)
		}
	}
	toks, pages := walk(t, e, e.admin, "/api/v1/tokens", "tokens", 3)
	if len(toks) != 7 || pages != 3 {
		t.Fatalf("%d tokens in %d pages, want 7 in 3", len(toks), pages)
	}
	seen := map[string]bool{}
	for _, raw := range toks {
		var tk tokens.Token
		_ = json.Unmarshal(raw, &tk)
		if seen[tk.ID] {
			t.Fatalf("token %s listed twice", tk.ID)
		}
		seen[tk.ID] = true
	}
	// Five writes, five audit events, walked two at a time in the order they happened.
	for i := range 5 {
		req, _ := newRequest("POST", e.base+"/api/v1/tokens", fmt.Sprintf(`{"name":"w%d","role":"viewer"}`, i), e.admin)
		resp, err := httpDo(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("write %d: %v %v", i, resp, err)
		}
	}
	var events []json.RawMessage
	eventually(t, 5*time.Second, func() error {
		events, _ = walk(t, e, e.admin, "/api/v1/audit", "events", 2)
		if len(events) != 5 {
			return fmt.Errorf("%d audit events, want 5", len(events))
		}
		return nil
	})
	var last uint64
	for i, raw := range events {
		var ev gateway.AuditEvent
		_ = json.Unmarshal(raw, &ev)
		if ev.Seq <= last || ev.Action != "token_create" || ev.Actor != "admin" {
			t.Fatalf("event %d out of order or wrong: %s", i, raw)
		}
		last = ev.Seq
	}
	for _, bad := range []string{"limit=0x", "limit=-1", "limit=5000", "cursor=%21%21"} {
		for _, path := range []string{"/api/v1/tokens", "/api/v1/audit", "/api/v1/dlq"} {
			resp, body := e.get(t, path+"?"+bad, e.admin)
			if resp.StatusCode != 400 || resp.Header.Get("Content-Type") != "application/problem+json" ||
				!strings.Contains(string(body), "limit") && !strings.Contains(string(body), "cursor") {
				t.Fatalf("%s?%s: %d %s", path, bad, resp.StatusCode, body)
			}
		}
	}
}

// The DLQ is listed with each message's reason and origin and a preview of its body that
// is always valid JSON text: UTF-8 cut on a character boundary, or base64.
func TestDLQList(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	viewer, _, _ := e.toks.Create(ctx, "v", tokens.RoleViewer)
	dl := bus.NewDeadLetterer(e.js, "discovery", discardLogger(), nil)
	long := strings.Repeat("€", 1000) // 3,000 bytes: the 2 KiB preview ends mid-character
	bodies := [][]byte{[]byte(`{"ip":"127.0.0.1"}`), []byte(long), {0xff, 0xfe, 0x00, 0x01}}
	for i, b := range bodies {
		ack, err := e.js.Publish(ctx, "result.discovery.dc1.tcp_scan", b)
		if err != nil {
			t.Fatal(err)
		}
		src := bus.SourceRef{Stream: bus.StreamResults, Consumer: "discovery", Subject: "result.discovery.dc1.tcp_scan", Seq: ack.Sequence, Deliveries: uint64(i + 1)}
		if err := dl.DeadLetter(ctx, src, nats.Header{}, b, bus.CodeDecode, "decode: bad body "+fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.js.Publish(ctx, bus.BridgeDLQSubject("dc1"), []byte("outbox poison")); err != nil {
		t.Fatal(err)
	}
	raw, pages := walk(t, e, viewer, "/api/v1/dlq", "items", 2)
	if len(raw) != 4 || pages != 2 {
		t.Fatalf("%d items in %d pages, want 4 in 2", len(raw), pages)
	}
	items := make([]map[string]any, len(raw))
	for i := range raw {
		dec := json.NewDecoder(bytes.NewReader(raw[i]))
		dec.UseNumber()
		_ = dec.Decode(&items[i])
	}
	// The exact shape the console renders.
	for _, k := range []string{"seq", "subject", "code", "reason", "source_subject", "source_stream", "deliveries", "service", "time", "size", "data", "truncated"} {
		if _, ok := items[0][k]; !ok {
			t.Fatalf("item without %q: %s", k, raw[0])
		}
	}
	var first gateway.DLQItem
	_ = json.Unmarshal(raw[0], &first)
	if first.Subject != "dlq.discovery.dc1" || first.Code != "decode" || first.Reason != "decode: bad body 0" || first.Service != "discovery" ||
		first.SourceStream != "RESULTS" || first.SourceSubject != "result.discovery.dc1.tcp_scan" || first.Deliveries != 1 ||
		first.Data != `{"ip":"127.0.0.1"}` || first.Truncated || first.DataBase64 || first.Size != 18 {
		t.Fatalf("first item: %+v", first)
	}
	if _, err := time.Parse(time.RFC3339, first.Time); err != nil {
		t.Fatalf("time %q: %v", first.Time, err)
	}
	var cut, bin, bridge gateway.DLQItem
	_ = json.Unmarshal(raw[1], &cut)
	_ = json.Unmarshal(raw[2], &bin)
	_ = json.Unmarshal(raw[3], &bridge)
	if !cut.Truncated || cut.DataBase64 || len(cut.Data) != 2046 || !strings.HasPrefix(long, cut.Data) || cut.Size != 3000 {
		t.Fatalf("long body: truncated=%v base64=%v %d bytes", cut.Truncated, cut.DataBase64, len(cut.Data))
	}
	if b, err := base64.StdEncoding.DecodeString(bin.Data); !bin.DataBase64 || err != nil || !bytes.Equal(b, bodies[2]) || bin.Truncated {
		t.Fatalf("binary body: %+v", bin)
	}
	if bridge.Service != "bridge" || bridge.Data != "outbox poison" || bridge.Time == "" {
		t.Fatalf("bridge item: %+v", bridge)
	}
	// ?service= keeps one service's messages.
	only, _ := walk(t, e, viewer, "/api/v1/dlq?service=bridge", "items", 10)
	if len(only) != 1 {
		t.Fatalf("service=bridge: %d items", len(only))
	}
	// No consumer is left behind by listing.
	st, _ := e.js.Stream(ctx, bus.StreamDLQ)
	info, _ := st.Info(ctx)
	if info.State.Consumers != 0 {
		t.Fatalf("%d consumers left on DLQ", info.State.Consumers)
	}
	if resp, _ := e.get(t, "/api/v1/dlq", ""); resp.StatusCode != 401 {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
}

func newRequest(method, url, body, token string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

func httpDo(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// eventually polls f until it returns nil or d has passed.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
