package discovery

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
)

// TestReplayRebuildsAndReclassifies runs a discovery of the lab, then replays its stored
// results: dry (nothing sent, the payloads listed), for real (the same payloads again, as
// into a wiped CMDB, and no probe to the site), and after a classifier change (the new
// classification from the same results).
func TestReplayRebuildsAndReclassifies(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := newHarness(ctx, t, "127.77.123.0/24", 24)
	rulesDir := t.TempDir()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Tick, cfg.ClassifiersDir = h.dataDir, 50*time.Millisecond, rulesDir
	cctx, stopSvc := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(cctx, cfg, Deps{NC: h.nc, JS: h.js, CurveKey: h.hub}) }()
	defer func() { stopSvc(); <-done }()
	eventually(t, 10*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
	h.addLabCredentials(ctx, "")

	var st StartReply
	h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
	orig := h.waitRun(ctx, st.Run, 90*time.Second)
	if orig.State != StateCompleted || orig.Counters.Classified == 0 {
		t.Fatalf("run %s: %s %+v %v", st.Run, orig.State, orig.Counters, orig.Errors)
	}
	classes := func(v RunView) map[string]string {
		out := map[string]string{}
		for _, hb := range v.Hosts {
			if hb.Class != "" {
				out[hb.IP] = hb.Class
			}
		}
		return out
	}
	want := classes(orig)
	h.mu.Lock()
	sentBefore := len(h.payloads)
	h.mu.Unlock()
	probesBefore := h.bridge.count("ssh_exec") + h.bridge.count("tcp_scan") + h.bridge.count("snmp_get")

	replay := func(dry bool) RunView {
		t.Helper()
		var rr ReplayReply
		h.request(ctx, "replay", ReplayRequest{Stream: "RESULTS", Run: st.Run, DryRun: dry}, &rr)
		if rr.Run == "" || rr.Of != st.Run || rr.Results == 0 || rr.Probes == 0 {
			t.Fatalf("replay reply %+v", rr)
		}
		v := h.waitRun(ctx, rr.Run, 90*time.Second)
		if v.State != StateCompleted || v.ReplayOf != st.Run {
			t.Fatalf("replay run %s: %s (%s) replay_of %q errors %v", rr.Run, v.State, v.Reason, v.ReplayOf, v.Errors)
		}
		return v
	}

	// dry: same classes, nothing sent to the CMDB, the payloads listed in the log
	dry := replay(true)
	if got := classes(dry); !sameMap(got, want) {
		t.Errorf("dry replay classes %v, run %v", got, want)
	}
	listed := 0
	for _, l := range dry.Log {
		if strings.Contains(l, "dry run: would send") {
			listed++
		}
	}
	h.mu.Lock()
	sent := len(h.payloads) - sentBefore
	h.mu.Unlock()
	if sent != 0 || listed != orig.Counters.PayloadsSent {
		t.Errorf("dry replay: %d payloads sent (want 0), %d listed (the run sent %d)", sent, listed, orig.Counters.PayloadsSent)
	}

	// for real: the same payloads again (what rebuilds a wiped CMDB)
	real := replay(false)
	if got := classes(real); !sameMap(got, want) {
		t.Errorf("replay classes %v, run %v", got, want)
	}
	h.mu.Lock()
	sent = len(h.payloads) - sentBefore
	h.mu.Unlock()
	if sent != orig.Counters.PayloadsSent || real.Counters.CIsSent != orig.Counters.CIsSent {
		t.Errorf("replay sent %d payloads / %d CIs, the run %d / %d", sent, real.Counters.CIsSent, orig.Counters.PayloadsSent, orig.Counters.CIsSent)
	}
	if n := h.bridge.count("ssh_exec") + h.bridge.count("tcp_scan") + h.bridge.count("snmp_get"); n != probesBefore {
		t.Errorf("replays sent %d probes to the site", n-probesBefore)
	}

	// a classifier change, then a dry replay: the new classification of the same results
	rule := "classifiers:\n  - name: linux_test\n    class: unix_server\n    priority: 1000\n    match:\n      output: {uname -a: \"^Linux \"}\n"
	if err := os.WriteFile(filepath.Join(rulesDir, "zz-test.yaml"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	h.request(ctx, "classifiers_reload", struct{}{}, nil)
	again := replay(true)
	linux, moved := 0, 0
	got := classes(again)
	for ip, c := range want {
		if c == "linux_server" {
			linux++
			if got[ip] == "unix_server" {
				moved++
			}
		} else if got[ip] != c {
			t.Errorf("%s: %s after the change, %s before", ip, got[ip], c)
		}
	}
	if linux == 0 || moved != linux {
		t.Errorf("after the classifier change %d of %d linux servers are unix_server", moved, linux)
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
