package lab_test

import (
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/lab"
)

// The filtered forms a mapper sends (ss with a filter expression, grep on the pids, ps -p)
// answer the same lines as the whole tables with the other lines removed, on every host
// of every app service: a mapping that asks for one socket sees what it would have seen
// in the whole table.
func TestFilteredQueriesAnswerTheSame(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.189.0/24", 80)
	m := l.Manifest()
	byIP := map[string]lab.Host{}
	for _, h := range m.Hosts {
		byIP[h.IP] = h
	}
	type res struct {
		out    string
		status int
	}
	run := func(ip, cmd string) res {
		t.Helper()
		c, err := sshClient(t, byIP[ip])
		if err != nil {
			t.Fatalf("ssh %s: %v", ip, err)
		}
		defer c.Close()
		r := sshRun(t, c, cmd)
		return res{r.stdout, r.status}
	}
	lines := func(s string) []string {
		out := strings.Split(strings.TrimRight(s, "\n"), "\n")
		if len(out) == 1 && out[0] == "" {
			return nil
		}
		return out
	}
	pidRE := regexp.MustCompile(`pid=(\d+),`)
	sock := regexp.MustCompile(`^\S+\s+\d+\s+\d+\s+(\S+):(\d+)\s+(\S+)`)
	checked := 0
	for _, s := range m.AppServices {
		for _, e := range s.Edges {
			ip, port, _ := net.SplitHostPort(e.From)
			if e.From == "" || byIP[ip].IP == "" {
				continue
			}
			checked++
			// the listener of the port, bound to the host's address or to every address
			filtered := run(ip, "ss -Hltnp 'sport = :"+port+" and ( src "+ip+" or src [::ffff:"+ip+"] or src 0.0.0.0 or src [::] )'")
			var want []string
			for _, line := range lines(run(ip, "ss -Hltnp").out) {
				if mm := sock.FindStringSubmatch(line); mm != nil && mm[2] == port && (mm[1] == ip || mm[1] == "0.0.0.0" || mm[1] == "[::]") {
					want = append(want, line)
				}
			}
			if filtered.status != 0 || !slices.Equal(lines(filtered.out), want) || len(want) == 0 {
				t.Fatalf("%s: the filtered listener of %s (status %d):\n%s\nwant the lines of the whole table:\n%s", s.Name, e.From, filtered.status, filtered.out, strings.Join(want, "\n"))
			}
			var pids []string
			for _, mm := range pidRE.FindAllStringSubmatch(want[0], -1) {
				pids = append(pids, mm[1])
			}
			grep := "grep -F"
			for _, p := range pids {
				grep += " -e 'pid=" + p + ",'"
			}
			named := func(line string) bool {
				return slices.ContainsFunc(pids, func(p string) bool { return strings.Contains(line, "pid="+p+",") })
			}
			// the processes of the socket
			ps := run(ip, "ps -o pid=,comm=,args= -p "+strings.Join(pids, ","))
			var wantPS []string
			for _, line := range lines(run(ip, "ps -eo pid=,comm=,args=").out) {
				if f := strings.Fields(line); len(f) > 0 && slices.Contains(pids, f[0]) {
					wantPS = append(wantPS, line)
				}
			}
			if !slices.Equal(lines(ps.out), wantPS) || len(wantPS) == 0 {
				t.Errorf("%s: ps -p %v on %s:\n%s\nwant:\n%s", s.Name, pids, ip, ps.out, strings.Join(wantPS, "\n"))
			}
			// their sockets but the inbound ones on the port
			conns := run(ip, "ss -Htnp '! sport = :"+port+"' | "+grep)
			var wantConns []string
			for _, line := range lines(run(ip, "ss -Htnp").out) {
				if mm := sock.FindStringSubmatch(line); mm != nil && mm[2] != port && named(line) {
					wantConns = append(wantConns, line)
				}
			}
			if !slices.Equal(lines(conns.out), wantConns) {
				t.Errorf("%s: the connections of %v on %s:\n%s\nwant:\n%s", s.Name, pids, ip, conns.out, strings.Join(wantConns, "\n"))
			}
			if !e.Dead && !strings.Contains(conns.out, " "+e.To+" ") {
				t.Errorf("%s: the filtered connections of %s lack the edge to %s:\n%s", s.Name, e.From, e.To, conns.out)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no app service edge to check")
	}
	t.Run("filter", func(t *testing.T) { checkSSFilter(t, l) })
}

// checkSSFilter: the filter expression of ss, on one host: comparisons, addresses,
// and/or/not, parentheses, and a refused expression.
func checkSSFilter(t *testing.T, l *lab.Lab) {
	m := l.Manifest()
	var h lab.Host
	for _, s := range m.AppServices {
		ip, _, _ := net.SplitHostPort(s.Edges[0].From)
		for _, x := range m.Hosts {
			if x.IP == ip {
				h = x
			}
		}
		break
	}
	if h.IP == "" {
		t.Fatal("no app service in the lab")
	}
	c, err := sshClient(t, h)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		expr   string
		want   []string // each line holds one of these, in order
		status int
	}{
		{"sport = :22", []string{"0.0.0.0:22 ", "[::]:22 "}, 0},
		{"sport == :22 and src 0.0.0.0", []string{"0.0.0.0:22 "}, 0},
		{"( sport eq :22 ) and ! src 0.0.0.0", []string{"[::]:22 "}, 0},
		{"sport = :22 and ( src " + h.IP + " or src [::] )", []string{"[::]:22 "}, 0},
		{"src [::]", []string{"[::]:22 "}, 0},
		{"sport = :22 src 0.0.0.0/0", []string{"0.0.0.0:22 "}, 0},
		{"src 0.0.0.0:22", []string{"0.0.0.0:22 "}, 0},
		{"sport > :65000", nil, 0},
		{"dport = :22", nil, 0}, // listeners have no peer
		{"sport = :22 and", nil, 1},
		{"sport = :22 frobnicate", nil, 1},
	} {
		r := sshRun(t, c, "ss -Hltn '"+tc.expr+"'")
		got := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		if r.stdout == "" {
			got = nil
		}
		ok := r.status == tc.status && len(got) == len(tc.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.Contains(got[i], tc.want[i])
		}
		if tc.status != 0 && !strings.Contains(r.stderr, "syntax error") {
			ok = false
		}
		if !ok {
			t.Errorf("ss -Hltn '%s': status %d, stdout:\n%s\nstderr: %s\nwant status %d and lines holding %q", tc.expr, r.status, r.stdout, r.stderr, tc.status, tc.want)
		}
	}
}
