package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
	"github.com/outpost-dev/outpost/services/cmdb/ire"
	"github.com/outpost-dev/outpost/services/cmdb/store"
	"github.com/outpost-dev/outpost/services/gateway/console"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// BenchmarkAPIListCIs measures GET /api/v1/cis?class=server — one page of the default size,
// through the real gateway over HTTP on loopback, with a bearer token — on a hub whose CMDB
// (SQLite) holds OUTPOST_BENCH_CIS CIs (default 100,000), and reports p50/p99 in ms from
// sending the request to the decoded answer:
//
//	go test ./services/outpost/hub -run XXX -bench BenchmarkAPIListCIs -benchtime 1000x
//
// The CIs are servers of three subclasses (linux_server, windows_server, unix_server), so
// class=server is answered through the class hierarchy. OUTPOST_BENCH_SQLITE_FILE reuses a
// seeded CMDB file across runs (it is topped up to the count).
func BenchmarkAPIListCIs(b *testing.B) {
	total := 100_000
	if v, err := strconv.Atoi(os.Getenv("OUTPOST_BENCH_CIS")); err == nil && v > 0 {
		total = v
	}
	dir := b.TempDir()
	dbPath := os.Getenv("OUTPOST_BENCH_SQLITE_FILE")
	if dbPath == "" {
		dbPath = filepath.Join(dir, "cmdb.db")
	}
	seedCMDB(b, dbPath, total)

	cfg := hub.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSAddr = dir, freeAddrB(b), freeAddrB(b)
	cfg.CMDB, cfg.NoLocalBridge, cfg.Out = "sqlite://"+dbPath, true, io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	})
	base := "http://" + cfg.HTTPAddr
	waitHealthy(b, base, done)
	tok, err := os.ReadFile(filepath.Join(dir, hub.AdminTokenFile))
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	// The console's session cookie names a server-side session: sign in once for it.
	signin, _ := http.NewRequest("POST", base+console.Prefix+"/signin",
		strings.NewReader(url.Values{"token": {strings.TrimSpace(string(tok))}}.Encode()))
	signin.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	signin.Header.Set("Origin", base)
	sresp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(signin)
	if err != nil {
		b.Fatal(err)
	}
	sresp.Body.Close()
	var session *http.Cookie
	for _, ck := range sresp.Cookies() {
		if ck.Name == console.SessionCookie {
			session = ck
		}
	}
	if session == nil {
		b.Fatalf("console sign-in: %d, no session cookie", sresp.StatusCode)
	}
	type ci struct {
		Class string `json:"class"`
	}
	get := func() []ci {
		req, _ := http.NewRequest("GET", base+"/api/v1/cis?class=server", nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("GET /api/v1/cis?class=server: %d %v %.300s", resp.StatusCode, err, body)
		}
		var page struct {
			Items []ci `json:"items"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			b.Fatal(err)
		}
		return page.Items
	}
	// Warm the connection and the database's cache; check the page is full and holds
	// subclasses of server.
	for range 20 {
		items := get()
		if len(items) != 50 || !slices.ContainsFunc(items, func(x ci) bool { return x.Class == "linux_server" }) {
			b.Fatalf("class=server page: %d items %v, want 50 servers of subclasses", len(items), items)
		}
	}
	// The console's CMDB list page (class=server, one page), server-rendered from the same
	// API: time to its first byte, the whole page read.
	pageTTFB := func() time.Duration {
		req, _ := http.NewRequest("GET", base+console.Prefix+"/cis?class=server", nil)
		req.AddCookie(&http.Cookie{Name: session.Name, Value: session.Value})
		var first time.Time
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotFirstResponseByte: func() { first = time.Now() },
		}))
		t := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || !strings.Contains(string(body), "linux_server") {
			b.Fatalf("console CI list: %d %v %.300s", resp.StatusCode, err, body)
		}
		return first.Sub(t)
	}
	for range 5 {
		pageTTFB()
	}
	var lat, ttfb []time.Duration
	for b.Loop() { // b.Loop runs the setup above once, not once per probe round
		t := time.Now()
		get()
		lat = append(lat, time.Since(t))
		if len(lat)%5 == 0 { // a page view every fifth API call
			ttfb = append(ttfb, pageTTFB())
		}
	}
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		if len(d) == 0 {
			return 0
		}
		return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	b.ReportMetric(pct(ttfb, 0.50), "console-ttfb-p50-ms")
	b.ReportMetric(pct(ttfb, 0.99), "console-ttfb-p99-ms")
	b.ReportMetric(float64(total), "CIs")
}

// seedCMDB fills the SQLite CMDB at path up to total servers through the engine (no hub
// running), 1,000 per payload.
func seedCMDB(b *testing.B, path string, total int) {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+path, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := classes.Default()
	if err != nil {
		b.Fatal(err)
	}
	eng, err := ire.New(st, m, ire.Options{})
	if err != nil {
		b.Fatal(err)
	}
	exact, err := st.CountByClass(ctx)
	if err != nil {
		b.Fatal(err)
	}
	have := int(m.RollUp(exact)[classes.Root])
	start := time.Now()
	for i := have; i < total; i += 1000 {
		if _, err := eng.Ingest(ctx, serverPayload(i, min(1000, total-i))); err != nil {
			b.Fatal(err)
		}
	}
	if have < total {
		b.Logf("seeded %d CIs in %s", total-have, time.Since(start).Round(time.Millisecond))
	}
}

// serverPayload is n servers numbered from start: 70 % linux_server, 20 % windows_server,
// 10 % unix_server.
func serverPayload(start, n int) envelope.CIPayload {
	p := envelope.CIPayload{Source: "bench", Observed: time.Now().UTC(), Items: make([]envelope.CIItem, 0, n)}
	for i := range n {
		id := start + i
		class, os := "linux_server", "Linux"
		switch id % 10 {
		case 7, 8:
			class, os = "windows_server", "Windows"
		case 9:
			class, os = "unix_server", "AIX"
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: strconv.Itoa(i), Class: class, Attributes: map[string]any{
			"name":          fmt.Sprintf("srv-%07d", id),
			"serial_number": fmt.Sprintf("APIB-%07d", id),
			"ip_address":    fmt.Sprintf("10.%d.%d.%d", id>>16&255, id>>8&255, id&255),
			"os":            os,
			"cpu_count":     2 << (id % 3),
			"ram_mb":        4096,
			"environment":   []string{"production", "staging", "test"}[id%3],
		}})
	}
	return p
}

func freeAddrB(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitHealthy(b *testing.B, base string, done chan error) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-done:
			b.Fatalf("hub stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("hub not healthy within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
