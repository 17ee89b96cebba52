package mapping

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// What a host told a probe: its name, listening and established TCP sockets with their
// processes, and its process table. Parsed from `hostname`, `ss -ltnp`, `ss -tnp` and
// `ps -eo pid,comm,args` as procps and iproute2 print them.

// hostCommands are the commands of the first probe of every host.
var hostCommands = []string{"hostname", "uname -s", "ss -ltnp", "ss -tnp", "ps -eo pid,comm,args"}

type socket struct {
	local, peer netip.AddrPort
	pids        []int
	comms       []string
}

type process struct {
	pid        int
	comm, args string
}

type hostFacts struct {
	ip        string
	hostname  string
	os        string
	listeners []socket
	conns     []socket
	procs     map[int]process
	err       string // unreachable: why
}

var usersRE = regexp.MustCompile(`\("([^"]*)",pid=(\d+)`)

// parseSS reads ss output lines: State Recv-Q Send-Q Local Peer [Process].
func parseSS(out string) []socket {
	var socks []socket
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] == "State" || f[0] == "Netid" {
			continue
		}
		if f[0] == "tcp" || f[0] == "udp" { // with a Netid column
			if f[0] == "udp" {
				continue
			}
			f = f[1:]
			if len(f) < 5 {
				continue
			}
		}
		local, ok1 := parseAddrPort(f[3])
		peer, _ := parseAddrPort(f[4])
		if !ok1 {
			continue
		}
		s := socket{local: local, peer: peer}
		for _, m := range usersRE.FindAllStringSubmatch(line, -1) {
			pid, _ := strconv.Atoi(m[2])
			s.pids = append(s.pids, pid)
			s.comms = append(s.comms, m[1])
		}
		if f[0] == "LISTEN" || f[0] == "ESTAB" {
			socks = append(socks, s)
		}
		if f[0] == "LISTEN" {
			socks[len(socks)-1].peer = netip.AddrPort{}
		}
	}
	return socks
}

// parseAddrPort reads 0.0.0.0:80, *:80, [::]:80, [::ffff:127.0.0.1]:80, 127.0.0.53%lo:53.
func parseAddrPort(s string) (netip.AddrPort, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return netip.AddrPort{}, false
	}
	host, portS := s[:i], s[i+1:]
	port, err := strconv.Atoi(portS)
	if err != nil {
		return netip.AddrPort{}, false
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if j := strings.IndexByte(host, '%'); j >= 0 {
		host = host[:j]
	}
	if host == "*" {
		host = "0.0.0.0"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
}

func parsePS(out string) map[int]process {
	procs := map[int]process{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		p := process{pid: pid, comm: f[1]}
		// args is what follows the comm column (it may hold spaces)
		rest := strings.TrimSpace(line)
		rest = strings.TrimSpace(strings.TrimPrefix(rest, f[0]))
		rest = strings.TrimSpace(strings.TrimPrefix(rest, f[1]))
		p.args = rest
		procs[pid] = p
	}
	return procs
}

// listener finds the socket listening on ip:port (bound to it, or to every address).
func (h *hostFacts) listener(ip netip.Addr, port int) (socket, bool) {
	var any socket
	found := false
	for _, l := range h.listeners {
		if int(l.local.Port()) != port {
			continue
		}
		switch {
		case l.local.Addr() == ip:
			return l, true
		case l.local.Addr().IsUnspecified() && !found:
			any, found = l, true
		}
	}
	return any, found
}

// listensOn says whether the host has a listener on local (its outbound connections never
// start from one of its listening ports).
func (h *hostFacts) listensOn(local netip.AddrPort) bool {
	for _, l := range h.listeners {
		if l.local.Port() == local.Port() && (l.local.Addr() == local.Addr() || l.local.Addr().IsUnspecified()) {
			return true
		}
	}
	return false
}

// ports are every port the same processes listen on (for the CI's port: the lowest, as
// discovery reports it).
func (h *hostFacts) ports(pids []int) []int {
	var out []int
	for _, l := range h.listeners {
		if len(l.pids) > 0 && len(pids) > 0 && l.pids[0] == pids[0] {
			p := int(l.local.Port())
			dup := false
			for _, o := range out {
				dup = dup || o == p
			}
			if !dup {
				out = append(out, p)
			}
		}
	}
	return out
}
