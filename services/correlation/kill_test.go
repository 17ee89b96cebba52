package correlation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/page"
)

// The test binary doubles as a correlation replica: with these variables set, TestMain
// runs one replica against the given NATS URL until SIGTERM (or SIGKILL).
const (
	replicaEnv        = "CORR_TEST_REPLICA"
	replicaNATSEnv    = "CORR_TEST_NATS"
	replicaRulesEnv   = "CORR_TEST_RULES"
	replicaWebhookEnv = "CORR_TEST_WEBHOOK"
)

func runReplicaProcess() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", os.Getenv(replicaEnv))
	nc, err := nats.Connect(os.Getenv(replicaNATSEnv), nats.MaxReconnects(-1))
	if err != nil {
		log.Error("connect", "err", err)
		return 2
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg := DefaultConfig()
	cfg.Replica = os.Getenv(replicaEnv)
	cfg.ActiveLease = 2 * time.Second
	cfg.CMDBLookup = false
	cfg.RulesDir = os.Getenv(replicaRulesEnv)
	cfg.NotifyBackoff = 100 * time.Millisecond
	cfg.Notifiers = []NotifierConfig{{Name: "hook", Webhook: os.Getenv(replicaWebhookEnv)}}
	if err := Run(ctx, cfg, Deps{NC: nc, JS: js, Logger: log}); err != nil {
		log.Error("replica", "err", err)
		return 1
	}
	return 0
}

// replicaProc is a replica in its own process.
type replicaProc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startReplicaProcess(t *testing.T, name, natsURL, rules, webhook string) *replicaProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), replicaEnv+"="+name, replicaNATSEnv+"="+natsURL, replicaRulesEnv+"="+rules, replicaWebhookEnv+"="+webhook)
	rp := &replicaProc{name: name, cmd: cmd, out: &syncBuf{}}
	cmd.Stdout, cmd.Stderr = rp.out, rp.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- replica %s log:\n%s", name, tailLines(rp.out.String(), 30))
		}
	})
	return rp
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// hookCounter is the webhook receiver of the kill test: every POST counted by its
// Idempotency-Key (the notification id: a group's content).
type hookCounter struct {
	mu     sync.Mutex
	byID   map[string]int
	groups map[string]bool
}

// Kill a replica mid-storm, two replicas in their own processes: every event is counted
// once in one alert per key (no event lost, none doubled, no duplicate alert), every group
// is notified, and no notification is sent twice.
func TestKillReplicaMidStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two replica processes")
	}
	srv, err := bus.StartServer(bus.ServerConfig{Name: "corr-kill", StoreDir: t.TempDir(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("corr-kill-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := bus.Provision(ctx, js, bus.DefaultTopology(bus.Limits{}).WithConsumers(Consumers()...)); err != nil {
		t.Fatal(err)
	}
	hc := &hookCounter{byID: map[string]int{}, groups: map[string]bool{}}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n struct {
			GroupKey string `json:"group_key"`
		}
		_ = jsonDecode(r, &n)
		hc.mu.Lock()
		hc.byID[r.Header.Get("Idempotency-Key")]++
		hc.groups[n.GroupKey] = true
		hc.mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	rules := t.TempDir()
	if err := os.WriteFile(filepath.Join(rules, "rules.yaml"), []byte("grouping: {group_by: [site, node], group_wait: 1s, group_interval: 2s, repeat_interval: 1h}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reps := []*replicaProc{
		startReplicaProcess(t, "r1", srv.ClientURL(), rules, hook.URL),
		startReplicaProcess(t, "r2", srv.ClientURL(), rules, hook.URL),
	}
	kvL, err := js.KeyValue(ctx, bus.KVLeases)
	if err != nil {
		t.Fatal(err)
	}
	holders := func() map[string]int {
		out := map[string]int{}
		for p := range DefaultConfig().Partitions {
			if e, err := kvL.Get(ctx, partitionLeaseKey(p)); err == nil {
				out[string(e.Value())]++
			}
		}
		return out
	}
	eventually(t, 60*time.Second, func() error {
		if h := holders(); h["r1"] == 0 || h["r2"] == 0 || h["r1"]+h["r2"] != DefaultConfig().Partitions {
			return fmt.Errorf("partition holders %v: want both replicas sharing all %d", h, DefaultConfig().Partitions)
		}
		return nil
	})

	const keys, perKey = 200, 20
	pub := bus.NewPublisher(js, "/test", nil)
	sent := 0
	killed := false
	for round := range perKey {
		for k := range keys {
			ev := envelope.Event{ID: envelope.NewID(), Site: "dc1", Source: "webhook", Type: "storm", Node: fmt.Sprintf("node-%03d", k),
				Severity: "major", Message: fmt.Sprintf("round %d", round), Time: t0}
			if _, err := pub.Publish(ctx, bus.EventSubject("dc1", "webhook"), envelope.Meta{ID: ev.ID}, &ev); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		if round == perKey/3 && !killed {
			// mid-storm: the replica holding the most partitions dies without a word
			victim := reps[0]
			if h := holders(); h["r2"] > h["r1"] {
				victim = reps[1]
			}
			if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			t.Logf("killed %s after %d of %d events", victim.name, sent, keys*perKey)
		}
	}

	var alerts []api.Alert
	eventually(t, 90*time.Second, func() error {
		out, err := api.AlertList.Call(ctx, nc, api.AlertsListRequest{Request: pageAll()})
		if err != nil {
			return err
		}
		alerts = out.Items
		var total int64
		for _, a := range alerts {
			total += a.Count
		}
		if len(alerts) != keys || total != int64(sent) {
			return fmt.Errorf("%d alerts counting %d events, want %d counting %d", len(alerts), total, keys, sent)
		}
		return nil
	})
	seen := map[string]bool{}
	for _, a := range alerts {
		if seen[a.Node] {
			t.Errorf("two alerts for %s", a.Node)
		}
		seen[a.Node] = true
		if a.Count != perKey || a.State != api.StateOpen {
			t.Errorf("alert %s of %s: count %d state %s, want %d open", a.ID, a.Node, a.Count, a.State, perKey)
		}
	}
	eventually(t, 60*time.Second, func() error {
		hc.mu.Lock()
		defer hc.mu.Unlock()
		if len(hc.groups) != keys {
			return fmt.Errorf("%d groups notified, want %d", len(hc.groups), keys)
		}
		return nil
	})
	time.Sleep(3 * time.Second) // two more group intervals: a repeat would show now
	hc.mu.Lock()
	defer hc.mu.Unlock()
	for id, n := range hc.byID {
		if n != 1 {
			t.Errorf("notification %s sent %d times", id, n)
		}
	}
	t.Logf("%d events, %d alerts, %d notifications", sent, len(alerts), len(hc.byID))
}

func pageAll() page.Request { return page.Request{Limit: page.MaxLimit} }

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }
