package alertmanager

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var amBin string

// TestMain builds Alertmanager's own command from its module (the version in go.mod), or
// takes AM_BIN. The module zip lacks the web UI's compiled assets (ui/app/dist, made by
// npm at release), which the ui package embeds: the build copies the module and puts a
// placeholder page there. Nothing else changes; the benchmarks use the API, not the UI.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "am-bench")
	if err != nil {
		panic(err)
	}
	amBin = os.Getenv("AM_BIN")
	if amBin == "" {
		amBin = filepath.Join(dir, "alertmanager")
		if err := buildAM(dir, amBin); err != nil {
			fmt.Fprintln(os.Stderr, "build alertmanager:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func buildAM(dir, bin string) error {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/prometheus/alertmanager").Output()
	if err != nil {
		return fmt.Errorf("go list: %w", err)
	}
	src := filepath.Join(dir, "src")
	if err := os.CopyFS(src, os.DirFS(strings.TrimSpace(string(out)))); err != nil {
		return err
	}
	for _, ui := range []string{"elm", "mantine"} {
		p := filepath.Join(src, "ui", "app", "dist", ui)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(p, "index.html"), []byte("<html>the UI assets are not in the Go module</html>"), 0o644); err != nil {
			return err
		}
	}
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/alertmanager")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// am is a running Alertmanager on loopback (no cluster listener) whose one receiver is a
// webhook in this process; grouping as the correlation benchmarks' default (by node).
type am struct {
	url string
	cmd *exec.Cmd
}

func startAM(b *testing.B) *am {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	b.Cleanup(hook.Close)
	dir := b.TempDir()
	cfg := fmt.Sprintf(`route:
  receiver: hook
  group_by: [site, node]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: %s
`, hook.URL)
	if err := os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	addr := freePort(b)
	cmd := exec.Command(amBin, "--config.file="+filepath.Join(dir, "am.yml"), "--storage.path="+dir,
		"--web.listen-address="+addr, "--cluster.listen-address=", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	a := &am{url: "http://" + addr, cmd: cmd}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(a.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return a
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("alertmanager not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cpu is the Alertmanager process's user+system CPU so far (/proc/<pid>/stat).
func (a *am) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", a.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
}

// batch is alerts i..i+n of the load: n alerts over keys label sets (the same event load as
// the correlation benchmarks: type cpu, site dc1, node <prefix>-<k>).
func batch(prefix string, i, n, keys int) []byte {
	out := make([]alert, n)
	now := time.Now()
	for k := range n {
		out[k] = alert{Labels: map[string]string{"alertname": "cpu", "site": "dc1", "source": "webhook", "severity": "major",
			"node": fmt.Sprintf("%s-%05d", prefix, (i+k)%keys)}, Annotations: map[string]string{"message": "load high"}, StartsAt: now}
	}
	b, _ := json.Marshal(out)
	return b
}

func (a *am) post(b *testing.B, body []byte) {
	resp, err := http.Post(a.url+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Fatalf("POST /api/v2/alerts: %s", resp.Status)
	}
}

// BenchmarkAlertmanagerIngest: 100,000 alerts over 1,000 label sets a round, POSTed in
// batches of 1,000 by 4 clients; alerts/s and Alertmanager's CPU per alert.
func BenchmarkAlertmanagerIngest(b *testing.B) {
	a := startAM(b)
	const n, keys, per, clients = 100_000, 1_000, 1_000, 4
	var total, cpu time.Duration
	for r := range b.N {
		bodies := make([][]byte, 0, n/per)
		for i := 0; i < n; i += per {
			bodies = append(bodies, batch(fmt.Sprintf("r%d", r), i, per, keys))
		}
		c0 := a.cpu(b)
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan []byte)
		for range clients {
			wg.Go(func() {
				for body := range next {
					a.post(b, body)
				}
			})
		}
		for _, body := range bodies {
			next <- body
		}
		close(next)
		wg.Wait()
		total += time.Since(start)
		cpu += a.cpu(b) - c0
	}
	perAlert := float64(cpu.Microseconds()) / float64(n*b.N)
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "alerts/s")
	b.ReportMetric(perAlert, "cpu-µs/alert")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkAlertmanagerLatency: 1,000 new alerts POSTed one every 2 ms while 2,000
// alerts/s of background load (batches of 20 every 10 ms) go in; latency is the POST's
// round trip — the alert is in Alertmanager's store when the API answers.
func BenchmarkAlertmanagerLatency(b *testing.B) {
	a := startAM(b)
	const probes, rate = 1_000, 2_000
	var lat []time.Duration
	for r := range b.N {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			t := time.NewTicker(10 * time.Millisecond)
			defer t.Stop()
			for i := 0; ; i += rate / 100 {
				a.post(b, batch(fmt.Sprintf("bg%d", r), i, rate/100, 1_000))
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
		})
		time.Sleep(200 * time.Millisecond)
		for k := range probes {
			body := batch(fmt.Sprintf("probe%d-%d", r, k), 0, 1, 1)
			t := time.Now()
			a.post(b, body)
			lat = append(lat, time.Since(t))
			time.Sleep(2 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
	b.ReportMetric(0, "ns/op")
}
