package e2e

import (
	"context"
	"encoding/json"
	"fmt"
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
	call := func(what string, f func(context.Context) error) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := f(cctx); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
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

	// --- metric: a gauge on the lab's status page
	l.SetGauge("load", 100)
	params, _ := json.Marshal(map[string]any{"port": 80, "path": "/feeds/metrics.json", "timeout": "10s"})
	call("metrics_add", func(ctx context.Context) error {
		_, err := api.MetricAdd.Call(ctx, nc, api.MetricDef{Name: "load", Site: "mx", Kind: api.KindHTTP, Targets: []string{web.IP},
			Interval: "1s", Params: params, Value: "gauges.load", Baseline: api.Baseline{MinSamples: 5, Threshold: 4}})
		return err
	})
	// refused with every problem at once
	if _, err := api.MetricAdd.Call(ctx, nc, api.MetricDef{Name: "Bad Name", Site: "mx", Kind: "ping", Interval: "0s"}); err == nil ||
		!containsAll(err.Error(), "name", "kind", "targets", "interval") {
		t.Fatalf("a bad metric definition: %v, want every problem named", err)
	}
	series := func(ctx context.Context) (api.Series, error) {
		r, err := api.SeriesList.Call(ctx, nc, api.SeriesListRequest{Metric: "load"})
		if err != nil || len(r.Items) != 1 {
			return api.Series{}, fmt.Errorf("series: %+v %v", r.Items, err)
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
	call("connectors_add", func(ctx context.Context) error {
		_, err := api.ConnectorAdd.Call(ctx, nc, api.Connector{Name: "tool", Site: "mx", URL: "http://" + web.IP + "/feeds/events.json",
			Interval: "1s", Records: "events", SinceParam: "since",
			Fields:     map[string]string{"id": "id", "node": "host", "type": "check", "severity": "level", "message": "summary", "time": "occurred"},
			Severities: map[string]string{"crit": "critical", "warn": "warning", "ok": "clear"}})
		return err
	})
	fromTool := func(a api.Alert) bool { return a.Source == api.ConnectorSourcePrefix+"tool" }
	state := func(ctx context.Context) (api.ConnectorState, error) {
		r, err := api.ConnectorList.Call(ctx, nc, page.Request{})
		if err != nil || len(r.Items) != 1 || r.Items[0].State == nil {
			return api.ConnectorState{}, fmt.Errorf("connectors %+v: %v", r.Items, err)
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
