package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/libs/page"
)

// Scheduled collection through a site's bridge, against the lab's web server: a metric read
// from a JSON status page every second builds its baseline, a jump the test makes becomes an
// anomaly alert on the target's node with its score, and the value coming back closes it; a
// pull connector polls the lab's event API, every record becomes one alert however many
// polls see it, the tool's "ok" closes its alert, and a record it cannot map is counted.
func TestMetricsAnomalyAndPullConnector(t *testing.T) {
	t.Parallel()
	const cidr = "127.77.139.0/24"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 8, Seed: 11})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	var web lab.Host
	for _, mh := range l.Manifest().Hosts {
		if !mh.Hostile && web.IP == "" && slices.Contains(mh.OpenTCP, 80) {
			web = mh
		}
	}
	if web.IP == "" {
		t.Fatal("the lab has no web server on port 80")
	}
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "mx", cidr, true)
	startBridge(t, h, "mx", "mx-br", tok)
	h.waitStatus(t, "mx-br", "up")
	nc, _ := h.serviceConn(t)
	ctx := context.Background()
	alerts := func(ctx context.Context) ([]api.Alert, error) {
		r, err := api.AlertList.Call(ctx, nc, api.AlertsListRequest{Request: page.Request{Limit: 1000}})
		return r.Items, err
	}
	find := func(ctx context.Context, match func(api.Alert) bool) ([]api.Alert, []api.Alert, error) {
		all, err := alerts(ctx)
		var got []api.Alert
		for _, a := range all {
			if match(a) {
				got = append(got, a)
			}
		}
		return got, all, err
	}

	// --- metric: a gauge on the lab's status page, defined in a file through the CLI
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	l.SetGauge("load", 100)
	if out, err := h.outpost(t, "metrics", "add", "-f", write("load.yaml", fmt.Sprintf(`name: load
site: mx
kind: http_request
targets: [%s]
interval: 1s
params: {port: 80, path: /feeds/metrics.json, timeout: 10s}
value: gauges.load
baseline: {min_samples: 5, threshold: 4}
`, web.IP))); err != nil || !strings.Contains(string(out), "metric load: http_request on mx every 1s, 1 target(s)") {
		t.Fatalf("outpost metrics add: %v\n%s", err, out)
	}
	// refused with every problem at once, before anything is sent
	if out, err := h.outpost(t, "metrics", "add", "-f", write("bad.yaml", "name: Bad Name\nsite: mx\nkind: ping\ninterval: 0s\n")); err == nil ||
		!containsAll(err.Error(), "bad.yaml:1: name", "kind", "targets", "interval") {
		t.Fatalf("a bad metric definition: %v %s, want every problem named with file:line", err, out)
	}
	// and by the gateway, for a client that skips the CLI's check
	if code, body := h.api(t, "POST", "/api/v1/metrics", api.MetricDef{Name: "Bad Name", Site: "mx", Kind: "ping", Interval: "0s"}); code != 400 ||
		!containsAll(string(body), "name", "kind", "targets", "interval") {
		t.Fatalf("POST /api/v1/metrics of a bad definition: %d %s, want 400 naming every problem", code, body)
	}
	series := func(ctx context.Context) (api.Series, error) {
		out, err := h.outpost(t, "metrics", "series", "--metric", "load", "-o", "json")
		var r api.SeriesListResponse
		if err == nil {
			err = json.Unmarshal(out, &r)
		}
		if err != nil || len(r.Items) != 1 {
			return api.Series{}, fmt.Errorf("outpost metrics series: %+v %v %s", r.Items, err, out)
		}
		return r.Items[0], nil
	}
	var before api.Series
	eventually(t, 3*time.Minute, func() error {
		s, err := series(ctx)
		if err != nil {
			return err
		}
		if s.Samples < 8 || s.Mean != 100 || s.LastError != "" {
			return fmt.Errorf("series %+v: want 8 samples of 100 and no error", s)
		}
		before = s
		return nil
	})
	if before.Target != web.IP || before.Site != "mx" {
		t.Fatalf("series %+v: want target %s on site mx", before, web.IP)
	}
	l.SetGauge("load", 10_000)
	isAnomaly := func(a api.Alert) bool {
		return a.Type == api.EventTypeAnomaly && a.Source == api.SourceMetrics && a.Node == web.IP && a.Metric == "load"
	}
	var anomaly api.Alert
	eventually(t, 2*time.Minute, func() error {
		got, all, err := find(ctx, isAnomaly)
		if err != nil || len(got) != 1 || got[0].State != api.StateOpen {
			s, _ := series(ctx)
			return fmt.Errorf("anomaly alerts %+v (of %d, err %v); series %+v: want one open", got, len(all), err, s)
		}
		anomaly = got[0]
		return nil
	})
	if anomaly.Additional["score"] == "" || anomaly.Additional["value"] != "10000" || anomaly.Site != "mx" || anomaly.Severity != api.SeverityMajor {
		t.Fatalf("anomaly alert %+v: want score, value 10000, site mx, severity major", anomaly)
	}
	l.SetGauge("load", 100)
	eventually(t, 2*time.Minute, func() error {
		got, _, err := find(ctx, func(a api.Alert) bool { return a.ID == anomaly.ID })
		if err != nil || len(got) != 1 || got[0].State != api.StateClosed || got[0].CloseReason != "clear" {
			return fmt.Errorf("anomaly alert %+v (err %v): want closed by a clear", got, err)
		}
		return nil
	})

	// --- pull connector: another tool's event API
	t0 := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC) // the tool's times, not the test's
	l.AddFeedEvents(
		lab.FeedEvent{ID: "e1", Host: "db-1", Check: "disk", Level: "crit", Summary: "disk full", Occurred: t0},
		lab.FeedEvent{ID: "e2", Host: "web-9", Check: "http", Level: "warn", Summary: "slow", Occurred: t0.Add(time.Second)},
		lab.FeedEvent{ID: "e3", Host: "", Check: "http", Level: "warn", Summary: "no host", Occurred: t0.Add(time.Second)},
	)
	if out, err := h.outpost(t, "connectors", "add", "-f", write("tool.yaml", fmt.Sprintf(`name: tool
site: mx
url: http://%s/feeds/events.json
interval: 1s
records: events
since_param: since
fields: {id: id, node: host, type: check, severity: level, message: summary, time: occurred}
severities: {crit: critical, warn: warning, ok: clear}
`, web.IP))); err != nil {
		t.Fatalf("outpost connectors add: %v\n%s", err, out)
	}
	fromTool := func(a api.Alert) bool { return a.Source == api.ConnectorSourcePrefix+"tool" }
	state := func(ctx context.Context) (api.ConnectorState, error) {
		out, err := h.outpost(t, "connectors", "ls", "-o", "json")
		var r api.ConnectorsResponse
		if err == nil {
			err = json.Unmarshal(out, &r)
		}
		if err != nil || len(r.Items) != 1 || r.Items[0].State == nil {
			return api.ConnectorState{}, fmt.Errorf("outpost connectors ls: %+v %v %s", r.Items, err, out)
		}
		return *r.Items[0].State, nil
	}
	var polls int64
	eventually(t, 2*time.Minute, func() error {
		got, _, err := find(ctx, fromTool)
		st, serr := state(ctx)
		if err != nil || serr != nil || len(got) != 2 || st.Rejected != 1 {
			return fmt.Errorf("alerts from the tool %+v (err %v), connector state %+v (err %v): want 2 alerts and 1 rejected record", got, err, st, serr)
		}
		polls = st.Polls
		return nil
	})
	// polled again and again: each record is still one event
	eventually(t, 2*time.Minute, func() error {
		st, err := state(ctx)
		if err != nil || st.Polls < polls+3 {
			return fmt.Errorf("connector state %+v (err %v): want 3 more polls than %d", st, err, polls)
		}
		return nil
	})
	got, _, err := find(ctx, fromTool)
	if err != nil || len(got) != 2 {
		t.Fatalf("alerts from the tool %+v: %v", got, err)
	}
	for _, a := range got {
		if a.Count != 1 || a.State != api.StateOpen || a.Site != "mx" {
			t.Fatalf("alert %+v: want count 1 (each record taken once), open, site mx", a)
		}
	}
	l.AddFeedEvents(lab.FeedEvent{ID: "e4", Host: "db-1", Check: "disk", Level: "ok", Summary: "disk fine", Occurred: t0.Add(time.Minute)})
	eventually(t, 2*time.Minute, func() error {
		got, _, err := find(ctx, func(a api.Alert) bool { return fromTool(a) && a.Node == "db-1" })
		if err != nil || len(got) != 1 || got[0].State != api.StateClosed {
			return fmt.Errorf("db-1's alert %+v (err %v): want closed by the tool's ok", got, err)
		}
		return nil
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
