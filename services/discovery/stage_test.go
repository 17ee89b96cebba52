package discovery

// Timeline tests of the run's stages: a run's state is put at a stage, turns run at times a
// fake clock gives, and the outcome is checked at each instant — nothing sleeps. The stages'
// ports are implemented here without a hub (probes are registered but carry no
// credentials; payloads are recorded); the service tests run them against the real ones.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// t0 is a fixed instant: no test depends on today.
var t0 = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

// localProber builds probes as the service does, minus the known host key and the sealed
// credentials; the credential types in missing have none at the site.
type localProber struct{ missing map[string]bool }

func (p localProber) probe(_ context.Context, t *turn, req probeRequest) (*envelope.Probe, error) {
	if req.Spec.Credentials != "" && p.missing[req.Spec.Credentials] {
		return nil, errNoCredentials
	}
	pr, err := probeEnvelope(t, req, nil)
	if err != nil {
		return nil, err
	}
	t.register(pr, req)
	return pr, nil
}

type fixedScope struct {
	of      site
	bridges []string
}

func (s fixedScope) site(_ context.Context, name string) (site, error) {
	if name != s.of.Name {
		return site{}, fmt.Errorf("site %q not found", name)
	}
	return s.of, nil
}

func (s fixedScope) recipients(context.Context, string) ([]string, error) { return s.bridges, nil }

func (s fixedScope) scanners(context.Context, string) (int, error) { return len(s.bridges), nil }

// payloadLog records the payloads sent to the CMDB; while fail is set, sending fails.
type payloadLog struct {
	ids      []string
	payloads []*envelope.CIPayload
	fail     error
}

func (l *payloadLog) sendPayload(_ context.Context, _, id string, p *envelope.CIPayload) error {
	if l.fail != nil {
		return l.fail
	}
	l.ids = append(l.ids, id)
	l.payloads = append(l.payloads, p)
	return nil
}

// rig is a run, the pipeline over it and the clock its turns read.
type rig struct {
	t     *testing.T
	cfg   Config
	clock *clock.Fake
	rules *Classifiers
	probe localProber
	scope fixedScope
	sink  *payloadLog
	p     *pipeline
	rs    *runState
}

func newRig(t *testing.T, state string, hosts ...*Host) *rig {
	t.Helper()
	rules, err := NewClassifiers("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ProbeResends = 0 // the stages' own timelines; TestExpiredProbesResent sets it
	g := &rig{t: t, cfg: cfg, clock: clock.NewFake(t0), rules: rules, probe: localProber{missing: map[string]bool{}},
		scope: fixedScope{of: site{Name: "lab", Ranges: []string{"127.77.9.0/30"}}, bridges: []string{"XKEY"}}, sink: &payloadLog{}}
	r := &RunRecord{ID: "01RUN", Site: "lab", State: state, Created: t0, Deadline: t0.Add(cfg.MaxRunTime), Pending: map[string]*pendingProbe{}}
	g.rs = &runState{run: r, hosts: map[string]*Host{}}
	for _, h := range hosts {
		h.Run, h.Facts.IP = r.ID, h.IP
		g.rs.hosts[h.IP] = h
	}
	g.build()
	return g
}

// build (re)makes the pipeline after a test changed the rig's config or ports.
func (g *rig) build() {
	g.p = newPipeline(g.cfg, g.rules, g.scope, g.probe, g.sink)
}

// turn runs the pipeline once at the clock's time.
func (g *rig) turn() *turn {
	t := newTurn(g.rs, g.clock.Now())
	g.p.advance(context.Background(), t)
	return t
}

// at moves the clock to t0+d and runs a turn.
func (g *rig) at(d time.Duration) *turn {
	g.clock.Set(t0.Add(d))
	return g.turn()
}

func (g *rig) kinds(ps []*envelope.Probe) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind)
	}
	slices.Sort(out)
	return out
}

// answer stands for a probe's final result having been applied (handleResult).
func (g *rig) answer(ids ...string) {
	for _, id := range ids {
		delete(g.rs.run.Pending, id)
	}
}

func (g *rig) pendingIDs() []string {
	var ids []string
	for id := range g.rs.run.Pending {
		ids = append(ids, id)
	}
	return ids
}

func lastLog(h *Host) HostLog {
	if len(h.Log) == 0 {
		return HostLog{}
	}
	return h.Log[len(h.Log)-1]
}

// TestScanStage: a queued run sends its scan chunks and SNMP sweep at once and holds in
// scanning until each has its result or expired — the scan chunks only ScanTimeout +
// expireAfter later.
func TestScanStage(t *testing.T) {
	g := newRig(t, StateQueued)
	g.cfg.ChunkSize = 1
	g.build()
	tr := g.at(0)
	r := g.rs.run
	if r.State != StateScanning || r.Counters.Addresses != 2 {
		t.Fatalf("after start: %s, %d addresses; log %v", r.State, r.Counters.Addresses, r.Log)
	}
	if got := g.kinds(tr.out); !slices.Equal(got, []string{"snmp_get", "snmp_get", "tcp_scan", "tcp_scan"}) {
		t.Fatalf("probes sent: %v", got)
	}
	for _, p := range tr.out {
		want := t0.Add(g.cfg.ScanTimeout)
		if p.Kind == "snmp_get" {
			want = t0.Add(sweepTimeout)
		}
		if !p.Deadline.Equal(want) {
			t.Errorf("%s deadline %s, want %s", p.Kind, p.Deadline, want)
		}
	}
	steps := []struct {
		at      time.Duration
		state   string
		pending int
	}{
		{time.Second, StateScanning, 4},
		{sweepTimeout + expireAfter - time.Nanosecond, StateScanning, 4},
		{sweepTimeout + expireAfter, StateScanning, 2}, // the sweep gave up; scan chunks run on
		{g.cfg.ScanTimeout + expireAfter - time.Nanosecond, StateScanning, 2},
		{g.cfg.ScanTimeout + expireAfter, StateCompleted, 0}, // nothing alive: done
	}
	for _, s := range steps {
		g.at(s.at)
		if r.State != s.state || len(r.Pending) != s.pending {
			t.Fatalf("at +%s: %s with %d pending, want %s with %d", s.at, r.State, len(r.Pending), s.state, s.pending)
		}
	}
	if r.Counters.Errors != 2 || !strings.Contains(r.Errors[0], "no result before its deadline") {
		t.Fatalf("errors %d %v", r.Counters.Errors, r.Errors)
	}
}

// TestSweepWindow: a run keeps at most SweepInFlight sweep probes out per scanning bridge;
// the others wait on record (pending, unsent: written ahead like any pending probe) and go
// out as results come back, or as the ones out expire and are sent again. Published at
// once, a /16's sweep waited at the bridge past its deadlines.
func TestSweepWindow(t *testing.T) {
	cases := []struct {
		name             string
		bridges          []string
		perBridge, limit int
	}{
		{"one bridge", []string{"XKEY"}, 40, 40},
		{"two bridges", []string{"XKEY", "YKEY"}, 40, 80},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, StateQueued)
			g.scope.of.Ranges = []string{"127.77.9.0/24"} // 254 addresses: within one turn's build budget
			g.scope.bridges = c.bridges
			g.cfg.SweepInFlight = c.perBridge
			g.cfg.ProbeResends = 1
			g.build()
			r := g.rs.run
			out := func(tr *turn) (sent int) {
				for _, p := range tr.out {
					if p.Kind == "snmp_get" {
						sent++
					}
				}
				return sent
			}
			// state: sweep probes out (sent) and waiting (unsent) in the run's pending set
			state := func() (sent, waiting int) {
				for _, pp := range r.Pending {
					switch {
					case pp.Step != StepSweep:
					case pp.Unsent == "":
						sent++
					default:
						waiting++
						if pp.Unsent != reasonWindow {
							t.Fatalf("a sweep probe waits for %q, want %q", pp.Unsent, reasonWindow)
						}
					}
				}
				return sent, waiting
			}
			tr := g.at(0)
			if n := out(tr); n != c.limit || r.SweepWindow != c.limit {
				t.Fatalf("at the start sent %d sweep probes (window %d), want %d", n, r.SweepWindow, c.limit)
			}
			if sent, waiting := state(); sent != c.limit || waiting != 254-c.limit {
				t.Fatalf("pending sweep probes: %d out, %d waiting; want %d out, %d waiting", sent, waiting, c.limit, 254-c.limit)
			}
			// results free places: as many go out on the next turn, no more
			var done []string
			for id, pp := range r.Pending {
				if pp.Step == StepSweep && pp.Unsent == "" && len(done) < 7 {
					done = append(done, id)
				}
			}
			g.answer(done...)
			if tr := g.at(time.Second); out(tr) != 7 {
				t.Fatalf("after 7 results sent %d sweep probes, want 7", out(tr))
			}
			if tr := g.at(2 * time.Second); out(tr) != 0 {
				t.Fatalf("with the window full sent %d sweep probes, want none", out(tr))
			}
			if sent, _ := state(); sent != c.limit {
				t.Fatalf("%d sweep probes out, want the window's %d", sent, c.limit)
			}
			// the ones out expire without a result: sent again within the window, never beyond
			tr = g.at(sweepTimeout + expireAfter + time.Second)
			if sent, _ := state(); sent > c.limit || out(tr) == 0 {
				t.Fatalf("after the first sweep probes expired: %d out (window %d), %d sent this turn", sent, c.limit, out(tr))
			}
		})
	}
}

// TestScanStageRefuses: what stops a run before it scans, and a sweep without credentials.
func TestScanStageRefuses(t *testing.T) {
	cases := []struct {
		name    string
		ranges  []string
		bridges []string
		noSNMP  bool
		state   string
		reason  string
		log     string
	}{
		{name: "no bridge", state: StateFailed, reason: "no approved bridge"},
		{name: "bad range", ranges: []string{"127.77.9.300"}, bridges: []string{"X"}, state: StateFailed, reason: "range"},
		{name: "everything excluded", ranges: []string{"127.77.9.1"}, bridges: []string{"X"}, state: StateCompleted, reason: "no address to scan"},
		{name: "no snmp credential", bridges: []string{"X"}, noSNMP: true, state: StateScanning, log: "sweep snmp_system skipped: no snmp credential"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, StateQueued)
			g.scope.bridges = c.bridges
			g.scope.of.Exclude = []string{"127.77.9.1"}
			g.rs.run.Ranges = c.ranges
			g.probe.missing["snmp"] = c.noSNMP
			g.build()
			tr := g.at(0)
			r := g.rs.run
			if r.State != c.state || !strings.Contains(r.Reason, c.reason) {
				t.Fatalf("%s (%s), want %s (%s)", r.State, r.Reason, c.state, c.reason)
			}
			if c.log != "" && !slices.ContainsFunc(r.Log, func(l string) bool { return strings.Contains(l, c.log) }) {
				t.Fatalf("log %v lacks %q", r.Log, c.log)
			}
			if terminalState(r.State) && (len(tr.out) > 0 || r.Pending != nil) {
				t.Fatalf("a run that did not start sent %d probes, %d pending", len(tr.out), len(r.Pending))
			}
		})
	}
}

// TestClassifyStage: a host's classify probes follow its open ports; the classifiers run
// once their results are in, or at their deadline + expireAfter, never before.
func TestClassifyStage(t *testing.T) {
	cases := []struct {
		name  string
		host  *Host
		sent  []string
		class string // "" unclassified
	}{
		{name: "ssh and web", host: &Host{IP: "127.77.9.1", Stage: stageNew, Facts: Facts{Ports: []int{22, 80, 443}}},
			sent: []string{"http_get", "http_get", "ssh_exec", "tls_cert"}, class: "web_server"},
		{name: "windows by ports", host: &Host{IP: "127.77.9.2", Stage: stageNew, Facts: Facts{Ports: []int{135, 445}}},
			class: "windows_server"},
		{name: "ssh that never answers", host: &Host{IP: "127.77.9.3", Stage: stageNew, Facts: Facts{Ports: []int{22}}},
			sent: []string{"ssh_exec"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newRig(t, StateClassifying, c.host)
			// the site has no SNMP credential: the probes follow the ports alone (a host
			// without an SNMP answer is asked again otherwise: TestClassifyAsksSNMPAgain)
			g.probe.missing["snmp"] = true
			h := c.host
			tr := g.at(0)
			if got := g.kinds(tr.out); !slices.Equal(got, c.sent) || h.Stage != stageClassify {
				t.Fatalf("sent %v (stage %s), want %v", got, h.Stage, c.sent)
			}
			if _, ok := tr.touched[h.IP]; !ok {
				t.Fatal("host not marked for saving")
			}
			if len(c.sent) > 0 {
				if h.Facts.HasPort(80) {
					h.Facts.HTTP = map[int]HTTPFact{80: {Status: 200, Server: "nginx"}}
					g.answer(g.pendingIDs()...) // every result is in
				}
				g.at(g.cfg.ProbeTimeout + expireAfter - time.Nanosecond)
			} else {
				g.at(time.Second) // nothing to wait for: classified on the next turn
			}
			if h.Facts.HasPort(80) || len(c.sent) == 0 {
				if h.Class != c.class || g.rs.run.Counters.Classified != 1 {
					t.Fatalf("class %q, want %q", h.Class, c.class)
				}
				return
			}
			if h.Stage != stageClassify {
				t.Fatalf("classified at +%s, before its probe expired: %s", g.clock.Since(t0), h.Stage)
			}
			g.at(g.cfg.ProbeTimeout + expireAfter)
			if h.Stage != stageDone || h.Class != "" || g.rs.run.Counters.Unclassified != 1 {
				t.Fatalf("after the probe expired: stage %s class %q", h.Stage, h.Class)
			}
			if l := h.Log[len(h.Log)-2]; l.Status != "timeout" || !l.Time.Equal(t0.Add(g.cfg.ProbeTimeout+expireAfter)) {
				t.Fatalf("log %+v", l)
			}
			if g.rs.run.State != StateCompleted {
				t.Fatalf("run %s", g.rs.run.State)
			}
		})
	}
}

// TestClassifyAsksSNMPAgain: with the sweep on, a host alive on TCP whose sweep brought no
// SNMP answer is asked again at classify (the answer may have been lost under load), and
// its log says why; one that answered in the sweep is not asked twice.
func TestClassifyAsksSNMPAgain(t *testing.T) {
	cases := []struct {
		name string
		snmp map[string]any
		sent []string
	}{
		{"no answer in the sweep", nil, []string{"snmp_get", "ssh_exec"}},
		{"answered in the sweep", map[string]any{"1.3.6.1.2.1.1.1.0": "Linux lab 6.1"}, []string{"ssh_exec"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &Host{IP: "127.77.9.1", Stage: stageNew, Facts: Facts{Ports: []int{22}, SNMP: c.snmp}}
			g := newRig(t, StateClassifying, h)
			if !g.cfg.SNMPEveryAddress {
				t.Fatal("the sweep is off by default: this test assumes it on")
			}
			tr := g.at(0)
			if got := g.kinds(tr.out); !slices.Equal(got, c.sent) {
				t.Fatalf("sent %v, want %v; host log %+v", got, c.sent, h.Log)
			}
			said := slices.ContainsFunc(h.Log, func(l HostLog) bool { return strings.Contains(l.Note, "no SNMP answer in the sweep: asked again") })
			if said != (c.snmp == nil) {
				t.Fatalf("host log says it is asked again: %t, want %t: %+v", said, c.snmp == nil, h.Log)
			}
		})
	}
}

// TestExploreStage: a host classified in a turn gets its class's explore probes in the same
// turn; one whose credential type the site lacks is skipped with the reason.
func TestExploreStage(t *testing.T) {
	linux := func() *Host {
		return &Host{IP: "127.77.9.1", Stage: stageClassify, Facts: Facts{Ports: []int{22},
			SSH: map[string]string{"uname -a": "Linux web-1 6.1.0 x86_64", "hostname": "web-1"}}}
	}
	g := newRig(t, StateClassifying, linux())
	tr := g.at(0)
	h := g.rs.hosts["127.77.9.1"]
	if h.Class != "linux_server" || h.Stage != stageExplore || !slices.Equal(g.kinds(tr.out), []string{"ssh_exec"}) {
		t.Fatalf("class %q stage %s sent %v", h.Class, h.Stage, g.kinds(tr.out))
	}
	if p := g.rs.run.Pending[tr.out[0].ID]; p.Step != StepExplore || p.Name != "linux_inventory" {
		t.Fatalf("pending %+v", p)
	}
	if g.rs.run.State != StateExploring {
		t.Fatalf("run %s", g.rs.run.State)
	}

	g = newRig(t, StateClassifying, linux())
	g.probe.missing["ssh"] = true
	g.build()
	tr = g.at(0)
	h = g.rs.hosts["127.77.9.1"]
	if len(tr.out) != 0 || lastLog(h).Step != StepIdentify {
		t.Fatalf("sent %v; log %+v", g.kinds(tr.out), h.Log)
	}
	if l := h.Log[len(h.Log)-2]; l.Step != StepExplore || l.Status != "skipped" || !strings.Contains(l.Note, "linux_inventory") {
		t.Fatalf("explore log %+v", l)
	}
}

// TestIdentifyStage: a host's payload leaves once its explore probes are in or expired; a
// payload the stream refuses is sent again on the next turn.
func TestIdentifyStage(t *testing.T) {
	h := &Host{IP: "127.77.9.1", Stage: stageClassify, Facts: Facts{Ports: []int{22},
		SSH: map[string]string{"uname -a": "Linux web-1 6.1.0 x86_64", "hostname": "web-1"}}}
	g := newRig(t, StateClassifying, h)
	g.at(0)
	g.at(g.cfg.ProbeTimeout + expireAfter - time.Nanosecond)
	if len(g.sink.payloads) != 0 || h.Stage != stageExplore {
		t.Fatalf("payload sent while an explore probe may still answer (stage %s)", h.Stage)
	}
	g.sink.fail = errors.New("stream unavailable")
	g.at(g.cfg.ProbeTimeout + expireAfter)
	if h.Stage != stageExplore || lastLog(h).Status != "error" || g.rs.run.Counters.Errors != 1 {
		t.Fatalf("failed send: stage %s, log %+v", h.Stage, lastLog(h))
	}
	g.sink.fail = nil
	g.at(g.cfg.ProbeTimeout + expireAfter + time.Second)
	if h.Stage != stageDone || len(g.sink.payloads) != 1 || g.rs.run.Counters.PayloadsSent != 1 {
		t.Fatalf("stage %s, %d payloads", h.Stage, len(g.sink.payloads))
	}
	p := g.sink.payloads[0]
	if !p.Observed.Equal(t0.Add(g.cfg.ProbeTimeout+expireAfter+time.Second)) || g.sink.ids[0] != payloadID("01RUN", h.IP) {
		t.Fatalf("payload observed %s id %s", p.Observed, g.sink.ids[0])
	}
	if h.CIs != len(p.Items) || p.Items[0].Class != "linux_server" {
		t.Fatalf("host CIs %d, payload %+v", h.CIs, p.Items[0])
	}
}

// TestIngestStage: a run whose hosts are done completes once the CMDB's receipts are in, or
// ReceiptWait after it began waiting for them, with the reason; LLDP relations go once.
func TestIngestStage(t *testing.T) {
	done := func(ip, name string, lldp ...LLDPNeighbour) *Host {
		return &Host{IP: ip, Stage: stageDone, Class: "ip_switch", Name: name, CIs: 3, LLDP: lldp}
	}
	sw1 := done("127.77.9.1", "sw-1", LLDPNeighbour{LocalPort: "ge-0/0/1", RemoteName: "SW-2", RemotePort: "ge-0/0/9"})
	sw2 := done("127.77.9.2", "sw-2", LLDPNeighbour{LocalPort: "ge-0/0/9", RemoteName: "sw-1", RemotePort: "ge-0/0/1"})
	g := newRig(t, StateExploring, sw1, sw2)
	r := g.rs.run
	g.at(time.Minute)
	if len(g.sink.payloads) != 1 || g.sink.payloads[0].Relations[0].Type != "connected_to" || !r.Relations {
		t.Fatalf("relations: %d payloads", len(g.sink.payloads))
	}
	sw1.Ingested = &Ingested{Created: 3}
	steps := []struct {
		at    time.Duration
		state string
	}{
		{time.Minute + time.Second, StateExploring},
		{time.Minute + g.cfg.ReceiptWait - time.Nanosecond, StateExploring},
		{time.Minute + g.cfg.ReceiptWait, StateCompleted},
	}
	for _, s := range steps {
		g.at(s.at)
		if r.State != s.state {
			t.Fatalf("at +%s: %s, want %s", s.at, r.State, s.state)
		}
	}
	if len(g.sink.payloads) != 1 {
		t.Fatalf("relations sent %d times", len(g.sink.payloads))
	}
	if r.Counters.Errors != 1 || !strings.Contains(r.Errors[0], "no CMDB receipt for 1 payloads within 1m0s") {
		t.Fatalf("errors %v", r.Errors)
	}
	if !r.Finished.Equal(t0.Add(time.Minute + g.cfg.ReceiptWait)) {
		t.Fatalf("finished %s", r.Finished)
	}

	// every receipt in: done at once
	g = newRig(t, StateExploring, done("127.77.9.3", "sw-3"))
	g.rs.hosts["127.77.9.3"].Ingested = &Ingested{Unchanged: 3}
	g.at(0)
	if g.rs.run.State != StateCompleted || g.rs.run.Counters.Errors != 0 {
		t.Fatalf("%s %v", g.rs.run.State, g.rs.run.Errors)
	}
}

// TestPipelineMaxRunTime: a run is failed at the first turn past its deadline.
func TestPipelineMaxRunTime(t *testing.T) {
	g := newRig(t, StateScanning)
	g.rs.run.Pending["p1"] = &pendingProbe{Step: StepScan, Kind: "tcp_scan", Deadline: t0.Add(2 * time.Hour)}
	g.at(g.cfg.MaxRunTime)
	if g.rs.run.State != StateScanning {
		t.Fatalf("at the deadline: %s", g.rs.run.State)
	}
	g.at(g.cfg.MaxRunTime + time.Nanosecond)
	r := g.rs.run
	if r.State != StateFailed || r.Reason != "max run time reached (1h0m0s)" || r.Pending != nil {
		t.Fatalf("%s %q pending %v", r.State, r.Reason, r.Pending)
	}
	if !r.Finished.Equal(t0.Add(g.cfg.MaxRunTime + time.Nanosecond)) {
		t.Fatalf("finished %s", r.Finished)
	}
	if tr := g.at(g.cfg.MaxRunTime + time.Hour); len(tr.out)+len(tr.touched) != 0 || r.State != StateFailed {
		t.Fatal("a finished run moved")
	}
}

// TestPipelineResume: after a restart every pending probe goes again under its own id (the
// bus drops a copy within its dedup window; a late result of the first send still counts),
// with a deadline from the time of the resend, and a scan chunk keeps the chunks applied.
func TestPipelineResume(t *testing.T) {
	h := &Host{IP: "127.77.9.1", Stage: stageClassify, Facts: Facts{Ports: []int{22}}}
	g := newRig(t, StateClassifying, h)
	r := g.rs.run
	r.Pending["old-scan"] = &pendingProbe{Step: StepScan, Kind: "tcp_scan", Targets: []string{"127.77.9.1-127.77.9.2"}, Ports: []int{22}, Addrs: 2,
		Deadline: t0, Chunks: map[int]bool{0: true}}
	r.Pending["old-ssh"] = &pendingProbe{IP: h.IP, Step: StepClassify, Kind: "ssh_exec", Name: "ssh_identity", Cred: "ssh", Deadline: t0}
	r.Pending["old-gone"] = &pendingProbe{IP: h.IP, Step: StepExplore, Kind: "ssh_exec", Name: "no_longer_there", Deadline: t0}
	g.rs.resumed = true
	tr := g.at(time.Hour - time.Minute)
	if got := g.kinds(tr.out); !slices.Equal(got, []string{"ssh_exec", "tcp_scan"}) || len(r.Pending) != 2 {
		t.Fatalf("resent %v, %d pending", got, len(r.Pending))
	}
	for _, p := range tr.out {
		if p.ID != "old-scan" && p.ID != "old-ssh" {
			t.Fatalf("sent again under a new id %s", p.ID)
		}
		if p.Kind == "tcp_scan" && !strings.Contains(string(p.Params), `"targets":["127.77.9.1","127.77.9.2"]`) {
			t.Fatalf("scan chunk sent again with params %s", p.Params)
		}
	}
	for id, p := range r.Pending {
		if !p.Deadline.After(t0.Add(time.Hour)) {
			t.Fatalf("pending %s %+v", id, p)
		}
		if p.Step == StepScan && (p.Addrs != 2 || len(p.Targets) != 1 || !p.Chunks[0]) {
			t.Fatalf("scan chunk lost its targets or chunks: %+v", p)
		}
	}
	if r.Counters.Errors != 1 || !strings.Contains(r.Errors[0], "no longer in the classifiers") || h.Stage != stageClassify {
		t.Fatalf("errors %v, host %s", r.Errors, h.Stage)
	}
	if tr := g.at(time.Hour - time.Minute + time.Second); len(tr.out) != 0 {
		t.Fatal("resent twice")
	}
}

// TestExpiredProbesResent: a probe that got no result by its deadline + expireAfter (no
// bridge ran it: a WAN cut let it leave PROBES with its TTL) is sent again under a new id,
// its timeout doubled, at most ProbeResends times — counted, in the host's and the run's
// log — and its host waits for the new send; past the bound it is given up as before.
func TestExpiredProbesResent(t *testing.T) {
	const resends = 2
	newHost := func() *Host { return &Host{IP: "127.77.9.3", Stage: stageNew, Facts: Facts{Ports: []int{22}}} }
	setup := func(t *testing.T) (*rig, *Host, string) {
		h := newHost()
		g := newRig(t, StateClassifying, h)
		g.probe.missing["snmp"] = true // the ssh_exec alone (no SNMP asked again)
		g.cfg.ProbeResends = resends
		g.build()
		tr := g.at(0)
		if len(tr.out) != 1 || tr.out[0].Kind != "ssh_exec" {
			t.Fatalf("sent %v, want one ssh_exec", g.kinds(tr.out))
		}
		return g, h, tr.out[0].ID
	}
	pt := DefaultConfig().ProbeTimeout
	// expiry of the n-th send (0: the first) sent at `at`: its timeout doubled n times
	expiry := func(at time.Duration, n int) time.Duration { return at + pt<<n + expireAfter }

	t.Run("answered after a resend", func(t *testing.T) {
		g, h, first := setup(t)
		if tr := g.at(expiry(0, 0) - time.Nanosecond); len(tr.out) != 0 || g.rs.run.Pending[first] == nil {
			t.Fatalf("resent before its expiry: %v", g.kinds(tr.out))
		}
		tr := g.at(expiry(0, 0))
		if len(tr.out) != 1 || tr.out[0].ID == first || tr.out[0].Kind != "ssh_exec" {
			t.Fatalf("at the expiry sent %v, want the ssh_exec again under a new id", g.kinds(tr.out))
		}
		second := tr.out[0].ID
		pp := g.rs.run.Pending[second]
		if g.rs.run.Pending[first] != nil || pp == nil || pp.Resends != 1 || !pp.Deadline.Equal(t0.Add(expiry(0, 0)+2*pt)) {
			t.Fatalf("pending %v; the new send %+v, want resends 1 and deadline +%s", g.pendingIDs(), pp, expiry(0, 0)+2*pt)
		}
		if !tr.out[0].Deadline.Equal(pp.Deadline) {
			t.Fatalf("the probe's deadline %s, its pending copy's %s", tr.out[0].Deadline, pp.Deadline)
		}
		if c := g.rs.run.Counters; c.ProbesResent != 1 || c.ProbesSent != 2 {
			t.Fatalf("counters %+v: want 1 resent of 2 sent", c)
		}
		if l := lastLog(h); l.Status != "sent" || l.Probe != second || !strings.Contains(l.Note, "sent again (1 of 2)") {
			t.Fatalf("host log %+v", l)
		}
		if !slices.ContainsFunc(g.rs.run.Log, func(l string) bool { return strings.Contains(l, "sent again") }) {
			t.Fatalf("run log says nothing of the resend: %v", g.rs.run.Log)
		}
		g.at(expiry(0, 0) + time.Minute)
		if h.Stage != stageClassify {
			t.Fatalf("host moved on (%s) while its resent probe is pending", h.Stage)
		}
		g.answer(second)
		g.at(expiry(0, 0) + time.Minute + time.Second)
		if h.Stage == stageClassify || slices.ContainsFunc(h.Log, func(l HostLog) bool { return l.Status == "timeout" }) {
			t.Fatalf("after the answer: stage %s, log %+v", h.Stage, h.Log)
		}
	})

	t.Run("given up past the bound", func(t *testing.T) {
		g, h, _ := setup(t)
		at := time.Duration(0)
		for n := range resends {
			at = expiry(at, n)
			if tr := g.at(at); len(tr.out) != 1 {
				t.Fatalf("resend %d at +%s: sent %v", n+1, at, g.kinds(tr.out))
			}
		}
		at = expiry(at, resends)
		if tr := g.at(at - time.Nanosecond); len(tr.out) != 0 || h.Stage != stageClassify {
			t.Fatalf("before the last send's expiry: sent %v, stage %s", g.kinds(tr.out), h.Stage)
		}
		tr := g.at(at)
		if len(tr.out) != 0 || len(g.rs.run.Pending) != 0 || h.Stage != stageDone {
			t.Fatalf("past the bound: sent %v, pending %v, stage %s", g.kinds(tr.out), g.pendingIDs(), h.Stage)
		}
		if i := slices.IndexFunc(h.Log, func(l HostLog) bool { return l.Status == "timeout" }); i < 0 ||
			!strings.Contains(h.Log[i].Error, "after 2 resends") {
			t.Fatalf("host log %+v: want the timeout after 2 resends", h.Log)
		}
		if c := g.rs.run.Counters; c.ProbesResent != resends || g.rs.run.State != StateCompleted {
			t.Fatalf("run %s, counters %+v", g.rs.run.State, c)
		}
	})

	t.Run("timeouts", func(t *testing.T) {
		g, _, _ := setup(t)
		for _, c := range []struct {
			step    Step
			resends int
			want    time.Duration
		}{
			{StepSweep, 0, sweepTimeout}, {StepSweep, 1, 2 * sweepTimeout}, {StepSweep, 3, 8 * sweepTimeout},
			{StepClassify, 0, pt}, {StepExplore, 2, 4 * pt}, {StepClassify, 5, maxResendTimeout},
			{StepScan, 0, g.cfg.ScanTimeout}, {StepScan, 3, max(g.cfg.ScanTimeout, maxResendTimeout)},
		} {
			if got := g.p.timeout(c.step, c.resends); got != c.want {
				t.Errorf("%s after %d resends: %s, want %s", c.step, c.resends, got, c.want)
			}
		}
	})
}
