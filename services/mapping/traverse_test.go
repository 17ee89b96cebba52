package mapping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/lab"
)

// labProber runs commands on the lab's hosts over SSH, each in its own session, and keeps
// at most max bytes of each stdout with the truncated flag, as ssh_exec does with its cap.
type labProber struct {
	hosts map[string]lab.Host
	max   int
}

func (p *labProber) Exec(ctx context.Context, ip string, cmds []string) ([]Output, error) {
	h, ok := p.hosts[ip]
	if !ok || h.Credentials.SSH == nil {
		return nil, fmt.Errorf("ssh %s: no such lab host with SSH", ip)
	}
	c, err := ssh.Dial("tcp", net.JoinHostPort(ip, "22"), &ssh.ClientConfig{
		User: h.Credentials.SSH.Username, Auth: []ssh.AuthMethod{ssh.Password(h.Credentials.SSH.Password)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // the lab's own host on 127.77/16
		Timeout:         30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var outs []Output
	for _, cmd := range cmds {
		s, err := c.NewSession()
		if err != nil {
			return outs, err
		}
		var o bytes.Buffer
		s.Stdout = &o
		err = s.Run(cmd)
		s.Close()
		out := Output{Stdout: o.String(), Size: int64(o.Len())}
		var ee *ssh.ExitError
		switch {
		case errors.As(err, &ee):
			out.Exit = ee.ExitStatus()
		case err != nil:
			return outs, err
		}
		if len(out.Stdout) > p.max {
			out.Stdout, out.Truncated = out.Stdout[:p.max], true
		}
		outs = append(outs, out)
	}
	return outs, nil
}

// A mapping asks each host for one listener and one process's sockets: every edge of a lab
// service is found with outputs capped far below a whole socket table; when an output is
// cut anyway, the map says so (warning and node reason) instead of missing it silently.
func TestTraversalOutputs(t *testing.T) {
	t.Parallel()
	l, err := lab.Start(context.Background(), lab.Config{Range: "127.77.190.0/24", Hosts: 60, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	m := l.Manifest()
	hosts := map[string]lab.Host{}
	for _, h := range m.Hosts {
		hosts[h.IP] = h
	}
	if len(m.AppServices) == 0 {
		t.Fatal("no app service in the lab")
	}
	patterns, err := LoadPatterns("")
	if err != nil {
		t.Fatal(err)
	}
	svc := m.AppServices[0]
	entry, err := netip.ParseAddrPort(strings.TrimSuffix(strings.TrimPrefix(svc.Entry, "http://"), "/"))
	if err != nil {
		t.Fatalf("entry %q: %v", svc.Entry, err)
	}
	for _, tc := range []struct {
		name string
		max  int
		cut  bool
	}{
		// 1 KiB: far below a busy host's socket table, above what one node's queries answer
		{"small outputs are whole", 1 << 10, false},
		{"a cut output is said", 40, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &traversal{prober: &labProber{hosts: hosts, max: tc.max}, patterns: patterns,
				ranges: []netip.Prefix{netip.MustParsePrefix("127.77.190.0/24")}, lim: Limits{Depth: 6, Parallel: 2}}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			root, nodes, edges := tr.run(ctx, entry)
			byID := map[string]api.Node{}
			for _, n := range nodes {
				byID[n.ID] = n
			}
			cutWarned := false
			for _, w := range tr.warnings {
				cutWarned = cutWarned || strings.Contains(w, "truncated")
			}
			if !tc.cut {
				got := map[string]bool{}
				for _, e := range edges {
					got[e.From+" -> "+e.To] = e.Dead
				}
				for _, e := range svc.Edges {
					if dead, ok := got[e.From+" -> "+e.To]; !ok || dead != e.Dead {
						t.Errorf("edge %s -> %s (dead %v) not in the map: edges %v, nodes %+v, warnings %q", e.From, e.To, e.Dead, got, nodes, tr.warnings)
					}
				}
				if cutWarned {
					t.Errorf("warnings say an output was cut: %q", tr.warnings)
				}
				return
			}
			if r := byID[root].Reason; !strings.Contains(r, "truncated") || !cutWarned {
				t.Errorf("outputs cut at %d bytes: root %s reason %q, warnings %q; want both to say truncated", tc.max, root, r, tr.warnings)
			}
		})
	}
}
