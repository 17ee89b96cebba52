package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/telemetry/metrics"
)

func startNATS(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{ServerName: "metrics-test", Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls f until it returns nil.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %s: %v", d, err)
}

func TestHubSeries(t *testing.T) {
	nc, js := startNATS(t)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: bus.StreamResults, Subjects: []string{"result.>"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "discovery-results", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: bus.StreamDLQ, Subjects: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "dlq.cmdb", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bus.KVHeartbeats})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	beat, _ := json.Marshal(map[string]any{"agent": "br1", "site": "dc1", "outbox_bytes": 2048, "outbox_messages": 3,
		"outbox_age_s": 42.5, "probes_done": 17, "results_direct": 15, "results_stored": 2, "received": now.Add(-4 * time.Second)})
	if _, err := kv.Put(ctx, "dc1.br1", beat); err != nil {
		t.Fatal(err)
	}

	reg := metrics.NewRegistry()
	h, err := metrics.NewHub(reg, metrics.HubConfig{NC: nc, JS: js, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = h.Run(rctx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var up atomic.Bool
	go func() {
		_ = metrics.ServeListener(rctx, ln, reg, func() error {
			if !up.Load() {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	}()
	base := "http://" + ln.Addr().String()

	if code, _ := get(t, base+"/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz while not ready: %d", code)
	}
	up.Store(true)
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz when ready: %d", code)
	}

	// results: a streamed scan (one chunk, then its summary), a failed ssh probe; a receipt;
	// an alert write; one undecodable result (the stream keeps it too), and one result sent twice: 5 messages stored
	result := func(kind, status string, final bool, data any) {
		b, _ := json.Marshal(map[string]any{"id": "r", "probe": "p", "app": "discovery", "agent": "br1", "site": "dc1", "kind": kind,
			"status": status, "final": final, "started": now.Add(-3 * time.Second), "finished": now.Add(-time.Second), "data": data})
		if _, err := js.Publish(ctx, "result.discovery.dc1."+kind+".br1", b); err != nil {
			t.Fatal(err)
		}
	}
	result("tcp_scan", "ok", false, map[string]any{"hosts": []any{}})
	result("tcp_scan", "ok", true, map[string]any{"addresses": 254})
	result("ssh_exec", "error", true, nil)
	rc, _ := json.Marshal(envelope.Ingested{Payload: "x", Items: 5, Created: 3, Updated: 1, Unchanged: 1})
	if err := nc.Publish(bus.IngestedSubject("discovery"), rc); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("$KV.correlation_alerts.a.17", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("result.discovery.dc1.tcp_scan.br1", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	// the same final result sent again (its ack was lost): JetStream drops it, so do the counts
	again, _ := json.Marshal(map[string]any{"id": "again", "kind": "ssh_exec", "status": "ok", "final": true})
	for range 2 {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "result.discovery.dc1.ssh_exec.br1", Data: again,
			Header: nats.Header{jetstream.MsgIDHeader: []string{"again-1-0"}}}); err != nil {
			t.Fatal(err)
		}
	}

	want := []string{
		`outpost_probes_total{kind="tcp_scan",status="ok"} 1`,
		`outpost_probes_total{kind="ssh_exec",status="error"} 1`,
		`outpost_probes_total{kind="ssh_exec",status="ok"} 1`,
		`outpost_results_total 5`,
		`outpost_probe_duration_seconds_count{kind="tcp_scan"} 1`,
		`outpost_probe_duration_seconds_sum{kind="tcp_scan"} 2`,
		`outpost_result_delay_seconds_sum{kind="ssh_exec"} 1`,
		`outpost_scan_addresses_total 254`,
		`outpost_cmdb_ingested_cis_total{outcome="created"} 3`,
		`outpost_cmdb_ingested_payloads_total 1`,
		`outpost_alert_writes_total 1`,
		`outpost_metrics_undecoded_total{what="result"} 1`,
		`outpost_consumer_pending_messages{consumer="discovery-results",stream="RESULTS"} 5`,
		`outpost_stream_messages{stream="RESULTS"} 5`,
		`outpost_dlq_messages 1`,
		`outpost_bridge_outbox_bytes{agent="br1",site="dc1"} 2048`,
		`outpost_bridge_outbox_messages{agent="br1",site="dc1"} 3`,
		`outpost_bridge_outbox_age_seconds{agent="br1",site="dc1"} 42.5`,
		`outpost_bridge_probes_done_total{agent="br1",site="dc1"} 17`,
		`outpost_bridge_results_total{agent="br1",path="direct",site="dc1"} 15`,
		`outpost_bridge_results_total{agent="br1",path="outbox",site="dc1"} 2`,
		`outpost_bridge_heartbeat_age_seconds{agent="br1",site="dc1"} 4`,
		`outpost_metrics_query_errors{what="streams"} 0`,
	}
	eventually(t, 5*time.Second, func() error {
		code, body := get(t, base+"/metrics")
		if code != 200 {
			return fmt.Errorf("/metrics: %d %s", code, body)
		}
		var missing []string
		for _, w := range want {
			if !strings.Contains(body, "\n"+w+"\n") {
				missing = append(missing, w)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("missing series: %s", strings.Join(missing, "\n  "))
		}
		if strings.Contains(body, `stream="KV_`) {
			return fmt.Errorf("bucket streams reported as queues")
		}
		return nil
	})

	// rates: three probes over the 30 s since the first sample
	now = now.Add(30 * time.Second)
	if r := h.Rates(); r.Window != 30*time.Second || r.Probes != 3.0/30 || r.ScanAddrs != 254.0/30 || r.CMDBIngested != 5.0/30 || r.AlertWrites != 1.0/30 {
		t.Errorf("rates %+v", r)
	}
}

func TestHubConfigValidate(t *testing.T) {
	err := metrics.HubConfig{QueryTimeout: -1}.Validate()
	for _, want := range []string{"no NATS connection", "no JetStream context", "query timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want %q", err, want)
		}
	}
}
