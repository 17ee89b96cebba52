package hub_test

// The web console over the real hub with the lab demo: every page renders with real data,
// a live run streams its progress as Server-Sent Events until it completes, a CI page draws
// its neighbourhood, and no credential secret ever reaches a page.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

type consoleClient struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (cc *consoleClient) do(method, path string, form url.Values) (*http.Response, string) {
	cc.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, cc.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		req.Header.Set("Origin", cc.base)
	}
	resp, err := cc.c.Do(req)
	if err != nil {
		cc.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (cc *consoleClient) page(path string) string {
	cc.t.Helper()
	resp, body := cc.do(http.MethodGet, path, nil)
	if resp.StatusCode != 200 {
		cc.t.Fatalf("GET %s: %d %.500s", path, resp.StatusCode, body)
	}
	if strings.Contains(body, `class="problem"`) {
		cc.t.Fatalf("GET %s shows a problem: %s", path, between(body, `class="problem"`, "</div>"))
	}
	return body
}

func between(s, a, b string) string {
	_, rest, _ := strings.Cut(s, a)
	v, _, _ := strings.Cut(rest, b)
	return v
}

func TestConsoleOverTheLab(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := hub.DefaultConfig()
	cfg.DataDir, cfg.HTTPAddr, cfg.NATSAddr = dir, freeAddr(t), freeAddr(t)
	cfg.NoLocalBridge, cfg.Lab, cfg.LabRange, cfg.LabHosts = true, true, "127.77.140.0/24", 16
	cfg.Out = io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("hub: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("hub did not stop")
		}
	})
	base := "http://" + cfg.HTTPAddr
	eventually(t, 30*time.Second, func() error {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("healthz %d", resp.StatusCode)
		}
		return nil
	})
	var token string
	eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(dir, hub.AdminTokenFile))
		token = strings.TrimSpace(string(b))
		return err
	})
	// /healthz does not wait for discovery (a standby replica would never be "ready"): wait
	// until it serves before reading its pages, or a loaded machine shows its 503.
	eventually(t, 30*time.Second, func() error {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/discovery/runs", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("discovery runs: %d", resp.StatusCode)
		}
		return nil
	})
	jar, _ := cookiejar.New(nil)
	cc := &consoleClient{t: t, base: base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
	if resp, body := cc.do(http.MethodPost, "/console/signin", url.Values{"token": {token}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: %d %s", resp.StatusCode, body)
	}

	// The demo's own run completes; then the pages have the lab in them.
	runLink := regexp.MustCompile(`/console/discovery/runs/([0-9A-Z]{26})`)
	var demoRun string
	eventually(t, 90*time.Second, func() error {
		body := cc.page("/console/discovery")
		m := runLink.FindStringSubmatch(body)
		if m == nil {
			return fmt.Errorf("no run listed")
		}
		demoRun = m[1]
		if !strings.Contains(body, `<span class="pill good">completed</span>`) {
			return fmt.Errorf("demo run not completed yet")
		}
		return nil
	})

	dash := cc.page("/console/")
	for _, want := range []string{"agents up", "linux_server", "Stream lag", demoRun[:11]} {
		if !strings.Contains(dash, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	if agents := cc.page("/console/agents"); !strings.Contains(agents, "lab-bridge") || !strings.Contains(agents, `<span class="pill good">up</span>`) {
		t.Errorf("agents page: %s", between(agents, "<tbody>", "</tbody>"))
	}
	sites := cc.page("/console/sites")
	if !strings.Contains(sites, "127.77.140.0/24") || !strings.Contains(sites, "lab-ssh-1") {
		t.Errorf("sites page lacks the lab site or its credentials")
	}
	// No secret of the lab's credentials is on any page.
	var m lab.Manifest
	if b, err := os.ReadFile(filepath.Join(dir, "lab.json")); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("lab manifest: %v", err)
	}
	var secrets []string
	for _, h := range m.Hosts {
		if c := h.Credentials.SSH; c != nil && c.Password != "" {
			secrets = append(secrets, c.Password)
		}
		if c := h.Credentials.LDAP; c != nil && c.Password != "" {
			secrets = append(secrets, c.Password)
		}
	}
	if len(secrets) == 0 {
		t.Fatal("the lab has no password to look for")
	}

	run := cc.page("/console/discovery/runs/" + demoRun)
	if !strings.Contains(run, `data-counter="classified"`) || !strings.Contains(run, "linux_server") || strings.Contains(run, "data-events=") {
		t.Errorf("completed run page: %.2000s", between(run, "<main>", "</main>"))
	}
	hostIP := between(between(run, `id="run-hosts"`, "</tbody>"), `href="?host=`, `"`)
	if hostIP == "" {
		t.Fatal("no host link on the run page")
	}
	if host := cc.page("/console/discovery/runs/" + demoRun + "?host=" + url.QueryEscape(hostIP)); !strings.Contains(host, "Host "+hostIP) || !strings.Contains(host, "<th>Step</th>") {
		t.Errorf("host page for %s: %.1500s", hostIP, between(host, "<main>", "</main>"))
	}

	// Start a run from the console and follow its event stream to the end.
	resp, body := cc.do(http.MethodPost, "/console/discovery", url.Values{"site": {"lab"}, "ranges": {"127.77.140.0/28"}})
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !runLink.MatchString(loc) {
		t.Fatalf("start a run: %d %s %s", resp.StatusCode, loc, body)
	}
	if live := cc.page(loc); !strings.Contains(live, "Discovery run started") {
		t.Errorf("no confirmation after starting a run")
	}
	events := followEvents(t, cc, loc+"/events")
	if len(events) < 2 || events[len(events)-1].name != "end" {
		t.Fatalf("event stream: %+v", events)
	}
	var last struct {
		State    string `json:"state"`
		Progress int    `json:"progress"`
		Final    bool   `json:"final"`
		Counters struct {
			Addresses int `json:"addresses"`
			Alive     int `json:"alive"`
		} `json:"counters"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2].data), &last); err != nil {
		t.Fatal(err)
	}
	if last.State != "completed" || !last.Final || last.Progress != 100 || last.Counters.Addresses != 14 {
		t.Fatalf("last run event: %+v", last)
	}
	for i := 1; i < len(events)-1; i++ {
		if events[i].data == events[i-1].data {
			t.Fatalf("event %d repeats the previous one", i)
		}
	}

	// The CMDB: list, filter, search, a server's page with relations and its drawing.
	list := cc.page("/console/cis?class=linux_server")
	ciLink := regexp.MustCompile(`<tr data-class="linux_server">\s*<td><a href="/console/cis/([0-9A-Z]{26})"><strong>([^<]+)</strong>`)
	mm := ciLink.FindStringSubmatch(list)
	if mm == nil {
		t.Fatalf("no linux_server row: %.2000s", between(list, "<tbody>", "</tbody>"))
	}
	if strings.Contains(list, `data-class="software"`) {
		t.Error("class filter shows software")
	}
	if found := cc.page("/console/cis?search=" + url.QueryEscape(mm[2])); !strings.Contains(found, mm[1]) {
		t.Errorf("search %q does not find %s", mm[2], mm[1])
	}
	page := cc.page("/console/cis/" + mm[1])
	for _, want := range []string{`<svg class="topology"`, `class="edge-label"`, "contains", "<h2>Relations</h2>", "<h2>History</h2>", "created"} {
		if !strings.Contains(page, want) {
			t.Errorf("CI page lacks %q", want)
		}
	}
	if n := strings.Count(page, `<a href="/console/cis/`); n < 3 {
		t.Errorf("CI page has %d CI links", n)
	}
	cc.page("/console/dlq")
	if resp, _ := cc.do(http.MethodGet, "/console/cis/01ZZZZZZZZZZZZZZZZZZZZZZZZ", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown CI: %d", resp.StatusCode)
	}

	for _, p := range []string{"/console/", "/console/agents", "/console/sites", "/console/discovery", "/console/discovery/runs/" + demoRun,
		"/console/discovery/runs/" + demoRun + "?host=" + url.QueryEscape(hostIP), "/console/cis", "/console/cis/" + mm[1]} {
		_, body := cc.do(http.MethodGet, p, nil)
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Errorf("%s shows a credential secret", p)
			}
		}
		if strings.Contains(body, token) {
			t.Errorf("%s shows the session token", p)
		}
	}
}

type sseEvent struct{ name, data string }

// followEvents reads a Server-Sent Events stream until the server ends it.
func followEvents(t *testing.T, cc *consoleClient, path string) []sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cc.base+path, nil)
	resp, err := cc.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events: %d %s", resp.StatusCode, b)
	}
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("events: %v (got %d)", err, len(out))
	}
	return out
}
