package mapping

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// What a host told the probes of one node: its name, the socket listening on the node's
// port, the processes of that socket (their command lines, their other listening ports and
// their established connections). Parsed from `hostname`, `ss` and `ps` as procps and
// iproute2 print them.
//
// Every command asks only for what the node needs (ss filters, grep on the pids, ps -p),
// never for the whole socket or process table: a busy server's `ss -tanp` is megabytes,
// and a probe's output is capped, so a whole table would be cut and the map would miss the
// listener or the connections. What is still cut is said (Output.Truncated → a warning
// and the node's reason), never dropped silently.

// listenerCommands are the first probe of a node: the host's name and OS, and the socket
// listening on ip:port — bound to that address or to every address (IPv4 or IPv6).
func listenerCommands(ip netip.Addr, port int) []string {
	src := "src " + ip.String()
	if ip.Is6() {
		src = "src [" + ip.String() + "]"
	} else {
		src += " or src [::ffff:" + ip.String() + "]"
	}
	return []string{"hostname", "uname -s",
		fmt.Sprintf("ss -Hltnp 'sport = :%d and ( %s or src 0.0.0.0 or src [::] )'", port, src)}
}

// processCommands are the second probe of a node: the command lines of the listener's
// processes, their listening sockets and their TCP sockets that are not inbound on the
// entry port (grep keeps the lines naming one of the pids: ss has no pid filter).
func processCommands(pids []int, port int) []string {
	list := make([]string, len(pids))
	var grep strings.Builder
	grep.WriteString("grep -F")
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
		fmt.Fprintf(&grep, " -e 'pid=%d,'", p)
	}
	return []string{
		"ps -o pid=,comm=,args= -p " + strings.Join(list, ","),
		"ss -Hltnp | " + grep.String(),
		fmt.Sprintf("ss -Htnp '! sport = :%d' | %s", port, grep.String()),
	}
}

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
