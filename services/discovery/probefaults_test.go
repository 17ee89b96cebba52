package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
)

// faultHook makes probe builds fail as their dependencies do under load, with
// context.DeadlineExceeded: the first n builds of step, and every build for the address
// always.
type faultHook struct {
	step   Step
	n      int
	always string

	mu          sync.Mutex
	calls       int // builds of step
	failed      int // builds failed, step's first n
	alwaysCalls int // builds for always, all failed
}

func (f *faultHook) At(Point, string) {}

func (f *faultHook) ProbeFault(_ string, step Step, kind, ip string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ip != "" && ip == f.always {
		f.alwaysCalls++
		return fmt.Errorf("credentials of %s: %w", ip, context.DeadlineExceeded)
	}
	if step != f.step {
		return nil
	}
	f.calls++
	if f.calls <= f.n {
		f.failed++
		return fmt.Errorf("agents: request svc.agents.ls: %w", context.DeadlineExceeded)
	}
	return nil
}

func (f *faultHook) counts() (calls, failed, always int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls, f.failed, f.alwaysCalls
}

// TestProbeBuildFaults: builds of a run's probes fail transiently (a lookup of the site's
// bridges, its credentials, a host key timing out under load) — the first builds of the
// scan chunks, of the SNMP sweep, of the classify or of the explore probes. Each failed
// probe waits on record and is built again: every host ends as the manifest says, none
// lost with its failed neighbours (the sweep once gave up the rest of its range at the
// first failure; classify and explore probes were skipped). An address whose build keeps
// failing is given up alone, with its reason in the run's errors and counted.
func TestProbeBuildFaults(t *testing.T) {
	cases := []struct {
		name  string
		lab   string
		step  Step
		n     int
		stuck bool // one silent address of the range fails every build
	}{
		{"scan", "127.77.246.0/24", StepScan, 5, false},
		{"sweep", "127.77.247.0/24", StepSweep, 40, true},
		{"classify", "127.77.248.0/24", StepClassify, 40, false},
		{"explore", "127.77.249.0/24", StepExplore, 30, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := newHarness(ctx, t, tc.lab, 16)
			hook := &faultHook{step: tc.step, n: tc.n}
			if tc.stuck {
				hook.always = silentAddress(t, h)
			}
			nc, err := h.srv.Connect("discovery-faults")
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			stop := h.startIncarnation(ctx, nc, hook)
			defer stop()
			eventually(t, 10*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
			h.addLabCredentials(ctx, "")
			var st StartReply
			h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
			v := h.waitRun(ctx, st.Run, 240*time.Second)
			calls, failed, always := hook.counts()
			if failed == 0 {
				t.Fatalf("no build of %s failed (of %d): the faults did not hit the run", tc.step, calls)
			}
			h.checkAgainstManifest(ctx, v)
			if !tc.stuck {
				if v.Counters.ProbesUnsent != 0 {
					t.Errorf("%d probes given up, want none (every fault passes); errors %v", v.Counters.ProbesUnsent, v.Errors)
				}
				return
			}
			if always < maxBuildTries {
				t.Errorf("the stuck address's probe was built %d times, want at least %d tries", always, maxBuildTries)
			}
			if v.Counters.ProbesUnsent < 1 || !strings.Contains(strings.Join(v.Errors, "\n"), hook.always) {
				t.Errorf("the stuck address %s is not recorded: probes given up %d, errors %v", hook.always, v.Counters.ProbesUnsent, v.Errors)
			}
		})
	}
}

// silentAddress is an address of the lab's range where nothing lives.
func silentAddress(t *testing.T, h *harness) string {
	t.Helper()
	live := map[string]bool{}
	for _, mh := range h.lab.Manifest().Hosts {
		live[mh.IP] = true
	}
	p := netip.MustParsePrefix(h.lab.Manifest().Range)
	for a := p.Addr().Next(); p.Contains(a); a = a.Next() {
		if !live[a.String()] {
			return a.String()
		}
	}
	t.Fatalf("no silent address in %s", p)
	return ""
}
