package e2e

// One trace from `outpost discover` to the CMDB, across three processes (the CLI, the hub,
// a bridge), received by an OTLP/HTTP receiver in the test; then the gateway's /metrics
// after that discovery.

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/outpost-dev/outpost/libs/lab"
)

// span is one received span with the service.name of its resource.
type span struct {
	service, name       string
	traceID, id, parent string
	kind                tracepb.Span_SpanKind
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf) on loopback.
type otlpReceiver struct {
	url   string
	mu    sync.Mutex
	spans map[string]span // by span id
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{spans: map[string]span{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
			http.Error(w, "only POST /v1/traces", http.StatusNotFound)
			return
		}
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		data, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var in coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(data, &in); err != nil {
			t.Errorf("OTLP receiver: undecodable export: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.add(&in)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/v1/traces"
	return r
}

func (r *otlpReceiver) add(in *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range in.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				id := hex.EncodeToString(s.SpanId)
				r.spans[id] = span{service: service, name: s.Name, traceID: hex.EncodeToString(s.TraceId), id: id,
					parent: hex.EncodeToString(s.ParentSpanId), kind: s.Kind}
			}
		}
	}
}

func (r *otlpReceiver) snapshot() map[string]span {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]span, len(r.spans))
	for k, v := range r.spans {
		out[k] = v
	}
	return out
}

// hop is one expected step of the chain from the CMDB's span up to the CLI's root.
type hop struct {
	service string
	name    *regexp.Regexp
}

// chain finds a span matching the first hop whose ancestors match the next hops in order
// (other spans may sit between two hops of one process, none between processes). It
// returns the path found, or why none was.
func chain(spans map[string]span, traceID string, hops []hop) ([]span, error) {
	var best []span
	for _, s := range spans {
		if s.traceID != traceID || s.service != hops[0].service || !hops[0].name.MatchString(s.name) {
			continue
		}
		path := []span{s}
		cur, i := s, 1
		for i < len(hops) && cur.parent != "" {
			p, ok := spans[cur.parent]
			if !ok {
				break // parent not received (yet)
			}
			if p.service == hops[i].service && hops[i].name.MatchString(p.name) {
				path = append(path, p)
				i++
			} else if p.service != cur.service {
				break // a process boundary crossed without the expected hop
			}
			cur = p
		}
		if i == len(hops) && cur.parent == "" {
			return path, nil
		}
		if len(path) > len(best) {
			best = path
		}
	}
	names := make([]string, len(best))
	for i, s := range best {
		names[i] = s.service + ":" + s.name
	}
	return nil, fmt.Errorf("no span chain %v in trace %s (longest found: %v; %d spans received)", hops, traceID, names, len(spans))
}

func (h hop) String() string { return h.service + ":" + h.name.String() }

// labCredentials registers one credential per distinct SSH login and SNMP community of the lab.
func labCredentials(t *testing.T, h *testHub, site string, m lab.Manifest) {
	t.Helper()
	seen := map[string]bool{}
	for i, mh := range m.Hosts {
		if c := mh.Credentials.SSH; c != nil && !seen["ssh"+c.Username+c.Password] {
			seen["ssh"+c.Username+c.Password] = true
			h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": fmt.Sprintf("ssh-%d", i), "type": "ssh", "site": site,
				"username": c.Username, "secret": c.Password}, nil)
		}
		if c := mh.Credentials.SNMP; c != nil && !seen["snmp"+c.Community] {
			seen["snmp"+c.Community] = true
			h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": fmt.Sprintf("snmp-%d", i), "type": "snmp", "site": site,
				"secret": c.Community}, nil)
		}
	}
}

// cli runs the outpost CLI against the hub and returns its standard output.
func (h *testHub) cli(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "outpost"), append([]string{"--server", "http://" + h.http, "--token", h.token(t)}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("outpost %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

func TestTraceFromCLIToCMDB(t *testing.T) {
	// Not parallel: the processes it starts inherit the OTLP variables from the environment.
	recv := startOTLPReceiver(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", recv.url)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200") // ms: spans reach the receiver quickly

	const cidr = "127.77.88.0/28"
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 6, Seed: 5})
	if err != nil {
		t.Skipf("lab: %v", err)
	}
	defer l.Close()
	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "lab", cidr, true)
	startBridge(t, h, "lab", "br1", tok)
	h.waitStatus(t, "br1", "up")
	labCredentials(t, h, "lab", l.Manifest())

	out := h.cli(t, "discover", "--site", "lab", "--range", cidr)
	m := regexp.MustCompile(`run (\S+) started`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("outpost discover: no run id in %q", out)
	}
	run := m[1]
	r := waitDiscovery(t, h, run, 2*time.Minute)
	if r.State != "completed" || r.Counters.Classified == 0 {
		t.Fatalf("run %s: %s %s %+v", run, r.State, r.Reason, r.Counters)
	}
	traceID := strings.TrimSpace(h.cli(t, "runs", "show", run, "--trace"))
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(traceID) {
		t.Fatalf("runs show --trace: %q, want a trace id", traceID)
	}

	// CMDB ingest ← discovery ← bridge (outbox ← probe) ← discovery ← gateway ← CLI
	hops := []hop{
		{"outpost-hub", regexp.MustCompile(`^process cmdb\.ingest\.`)},
		{"outpost-hub", regexp.MustCompile(`^send cmdb\.ingest\.`)},
		{"outpost-hub", regexp.MustCompile(`^process result\.discovery\.lab\.`)},
		{"outpost-bridge", regexp.MustCompile(`^outbox result\.discovery\.lab\.`)},
		{"outpost-bridge", regexp.MustCompile(`^probe `)},
		{"outpost-hub", regexp.MustCompile(`^send probe\.lab\.`)},
		{"outpost-hub", regexp.MustCompile(`^svc\.discovery\.`)},
		{"outpost-hub", regexp.MustCompile(`^POST /api/v1/discovery/runs$`)},
		{"outpost-cli", regexp.MustCompile(`^outpost discover$`)},
	}
	var path []span
	eventually(t, 30*time.Second, func() error {
		var err error
		path, err = chain(recv.snapshot(), traceID, hops)
		return err
	})
	for i := len(path) - 1; i >= 0; i-- {
		t.Logf("%*s%s: %s", 2*(len(path)-1-i), "", path[i].service, path[i].name)
	}
	kinds := map[string]tracepb.Span_SpanKind{"outpost discover": tracepb.Span_SPAN_KIND_CLIENT}
	for _, s := range path {
		if s.parent == "" && s.service != "outpost-cli" {
			t.Errorf("root span %s:%s is not the CLI's", s.service, s.name)
		}
		if want, ok := kinds[s.name]; ok && s.kind != want {
			t.Errorf("span %s: kind %v, want %v", s.name, s.kind, want)
		}
	}

	t.Run("metrics", func(t *testing.T) { checkMetrics(t, h) })
}

// checkMetrics scrapes the gateway's /metrics after a discovery and checks its series.
func checkMetrics(t *testing.T, h *testHub) {
	resp, err := http.Get("http://" + h.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %d, want 401", resp.StatusCode)
	}
	var series map[string]float64
	eventually(t, 30*time.Second, func() error {
		code, body := h.api(t, "GET", "/metrics", nil)
		if code != 200 {
			return fmt.Errorf("/metrics: %d %s", code, body)
		}
		series = parseProm(t, string(body))
		// the bridge's heartbeat after the run carries its probe count
		if series[`outpost_bridge_probes_done_total{agent="br1",site="lab"}`] == 0 {
			return fmt.Errorf("no probes in br1's heartbeat yet")
		}
		return nil
	})
	sum := func(prefix string) (n float64, found bool) {
		for k, v := range series {
			if strings.HasPrefix(k, prefix) {
				n += v
				found = true
			}
		}
		return n, found
	}
	for _, c := range []struct {
		prefix string
		min    float64
	}{
		{`outpost_probes_total{kind="tcp_scan",status="ok"}`, 1},
		{`outpost_probes_total{`, 2},
		{`outpost_probe_duration_seconds_count{kind="tcp_scan"}`, 1},
		{`outpost_result_delay_seconds_count{`, 2},
		{`outpost_scan_addresses_total`, 1},
		{`outpost_cmdb_ingested_cis_total{`, 1},
		{`outpost_cmdb_ingested_payloads_total`, 1},
		{`outpost_consumer_pending_messages{consumer="discovery-results"`, 0},
		{`outpost_consumer_pending_messages{`, 0},
		{`outpost_dlq_messages`, 0},
		{`outpost_bridge_outbox_bytes{agent="br1",site="lab"}`, 0},
		{`outpost_bridge_outbox_age_seconds{agent="br1",site="lab"}`, 0},
		{`outpost_bridge_heartbeat_age_seconds{agent="br1",site="lab"}`, 0},
		{`outpost_alert_writes_total`, 0},
		{`go_goroutines`, 1},
	} {
		n, found := sum(c.prefix)
		if !found {
			t.Errorf("/metrics has no %s…", c.prefix)
		} else if n < c.min {
			t.Errorf("%s… = %v, want ≥ %v", c.prefix, n, c.min)
		}
	}
	// sane values: nothing negative, no lag left once the run is over, an empty outbox
	for k, v := range series {
		if v < 0 {
			t.Errorf("%s = %v: negative", k, v)
		}
	}
	if n, _ := sum(`outpost_consumer_pending_messages{consumer="discovery-results"`); n != 0 {
		t.Errorf("discovery-results lag %v after the run", n)
	}
	if n, _ := sum(`outpost_scan_addresses_total`); n > 16 {
		t.Errorf("scanned %v addresses in a /28", n)
	}
	if n, _ := sum(`outpost_metrics_undecoded_total`); n != 0 {
		t.Errorf("the metrics observer could not read %v messages", n)
	}
	out := h.cli(t, "status")
	if !regexp.MustCompile(`rates \(last \S+\): probes [0-9.]+/s +scan [0-9.]+ addresses/s +CMDB [0-9.]+ CIs/s`).MatchString(out) {
		t.Errorf("outpost status shows no rates:\n%s", out)
	}
}

// parseProm reads the Prometheus text format: series (name{labels}) → value.
func parseProm(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
