package discovery

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
)

// TestSweepAnswersLost: the SNMP sweep gets nothing about some lab hosts, as on a loaded
// site (the /16 bench lost 7 of 215 hosts' SNMP answers this way):
//   - "expired": the bridge took the sweep probe past its deadline and did not run it — a
//     result with code expired, which says nothing of the target: discovery must send it again
//     like a probe without a result (an SNMP-only device has nothing else to be found by);
//   - "no answer": the exchange itself got no SNMP answer (code timeout, a datagram lost
//     under load) for hosts alive on TCP: classify must ask them again.
//
// Every host ends with its manifest class.
func TestSweepAnswersLost(t *testing.T) {
	cases := []struct {
		name    string
		lab     string
		code    string
		tcpOnly bool // only hosts alive on TCP lose their sweep answer
	}{
		{"expired", "127.77.242.0/24", probes.CodeExpired, false},
		{"no answer", "127.77.243.0/24", probes.CodeTimeout, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h := newHarness(ctx, t, tc.lab, 16)
			targets, snmpOnly := map[string]bool{}, 0
			for _, mh := range h.lab.Manifest().Hosts {
				if !mh.SNMP || tc.tcpOnly && len(mh.OpenTCP) == 0 {
					continue
				}
				targets[mh.IP] = true
				if len(mh.OpenTCP) == 0 {
					snmpOnly++
				}
			}
			if len(targets) == 0 || !tc.tcpOnly && snmpOnly == 0 {
				t.Fatalf("the lab of %s has %d SNMP hosts to lose their sweep answer (%d SNMP-only): the test needs both kinds", tc.lab, len(targets), snmpOnly)
			}
			var mu sync.Mutex
			lost := map[string]bool{} // the first snmp_get of each target is its sweep's
			h.bridge.setIntercept(func(p *envelope.Probe) (envelope.Status, *envelope.Error) {
				if p.Kind != snmpget.Kind || !targets[p.Target] {
					return "", nil
				}
				mu.Lock()
				defer mu.Unlock()
				if lost[p.Target] {
					return "", nil
				}
				lost[p.Target] = true
				if tc.code == probes.CodeExpired {
					return envelope.StatusTimeout, &envelope.Error{Code: probes.CodeExpired, Message: "the probe's deadline passed before a worker took it: not run"}
				}
				return envelope.StatusTimeout, &envelope.Error{Code: probes.CodeTimeout, Message: "no answer from " + p.Target + " to any of 1 credentials (test: datagram lost)"}
			})
			stop := h.startService(ctx)
			defer stop()
			eventually(t, 10*time.Second, func() error { return bus.Request(ctx, h.nc, Service, "runs_ls", struct{}{}, nil) })
			h.addLabCredentials(ctx, "")
			var st StartReply
			h.request(ctx, "start", StartRequest{Site: "lab"}, &st)
			v := h.waitRun(ctx, st.Run, 240*time.Second)
			mu.Lock()
			n := len(lost)
			mu.Unlock()
			if n != len(targets) {
				t.Fatalf("the sweep answers of %d of %d targets were lost: the fault did not hit the run", n, len(targets))
			}
			h.checkAgainstManifest(ctx, v)
			if tc.code == probes.CodeExpired && v.Counters.ProbesResent < n {
				t.Errorf("%d probes resent, want at least the %d not run; counters %+v", v.Counters.ProbesResent, n, v.Counters)
			}
			if tc.code != probes.CodeTimeout {
				return // an SNMP-only host has no record (nor log) before its SNMP answer
			}
			// each host's log says why it was asked again
			const want = "no SNMP answer in the sweep: asked again"
			for ip := range targets {
				var hv RunView
				h.request(ctx, "run_get", IDRequest{ID: st.Run, Host: ip}, &hv)
				said := false
				for _, l := range hv.Host.Log {
					said = said || strings.Contains(l.Note, want)
				}
				if !said {
					t.Errorf("%s: the host's log does not say %q: %+v", ip, want, hv.Host.Log)
				}
			}
		})
	}
}
