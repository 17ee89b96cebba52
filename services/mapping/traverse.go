package mapping

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
)

// Prober runs commands on a host of the site (ssh_exec through a bridge in the service,
// anything that runs them in tests of real software) and returns each command's stdout.
// An error means the host could not be reached or logged in to: the node stays in the
// map as unreachable with the error as its reason.
type Prober interface {
	Exec(ctx context.Context, ip string, cmds []string) ([]Output, error)
}

// Output is one command's result. Truncated says the prober kept only the first part of
// its stdout (a capped probe result): what the command listed may be incomplete.
type Output struct {
	Stdout    string
	Exit      int
	Truncated bool
	Size      int64 // bytes the command wrote to stdout (when Truncated, more than len(Stdout))
}

// Limits bound one mapping.
type Limits struct {
	Depth int
	// MaxNodes stops a mapping that keeps finding endpoints (a warning says so).
	MaxNodes int
	// Parallel is how many hosts of one level are probed at once.
	Parallel int
}

// traversal maps one application service top-down from its entry.
type traversal struct {
	prober   Prober
	patterns *Patterns
	ranges   []netip.Prefix
	lim      Limits

	mu       sync.Mutex
	probes   int
	warnings []string

	nodes map[string]*nodeState
	edges map[[2]string]*api.Edge
}

type nodeState struct {
	api.Node
	pattern *Pattern
	ports   []int // every port of the process (CI port = lowest)
	os      string
	cut     []string // what was truncated, said in the node's reason
}

type target struct {
	host, name string // name: what the configuration called it (empty: an address)
	port       int
	by         string
	source     string
}

func (t *traversal) inRanges(a netip.Addr) bool {
	return slices.ContainsFunc(t.ranges, func(p netip.Prefix) bool { return p.Contains(a) })
}

func (t *traversal) warn(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.warnings = append(t.warnings, fmt.Sprintf(format, args...))
}

func (t *traversal) exec(ctx context.Context, ip string, cmds []string) ([]Output, error) {
	t.mu.Lock()
	t.probes++
	t.mu.Unlock()
	return t.prober.Exec(ctx, ip, cmds)
}

// truncated records that a command's output was cut: a warning of the mapping and a note
// in the node's reason, so a map that may miss something says so.
func (t *traversal) truncated(n *nodeState, cmd string, o Output, misses string) {
	if !o.Truncated {
		return
	}
	note := fmt.Sprintf("the output of `%s` was truncated (%d of %d bytes kept): %s", cmd, len(o.Stdout), o.Size, misses)
	n.cut = append(n.cut, note)
	t.warn("%s: %s", n.ID, note)
}

// probeNode asks the node's host for the socket listening on the node's port and, when
// one does, for its processes, their listening sockets and their connections: two
// probes whose output stays small whatever else the host runs.
func (t *traversal) probeNode(ctx context.Context, n *nodeState, addr netip.Addr) (h *hostFacts, l socket, found bool) {
	h = &hostFacts{ip: n.IP, procs: map[int]process{}}
	cmds := listenerCommands(addr, n.Port)
	out, err := t.exec(ctx, n.IP, cmds)
	switch {
	case err != nil:
		h.err = err.Error()
		return h, l, false
	case len(out) < len(cmds):
		h.err = fmt.Sprintf("the probe answered %d of %d commands", len(out), len(cmds))
		return h, l, false
	}
	h.hostname, h.os = strings.TrimSpace(out[0].Stdout), strings.TrimSpace(out[1].Stdout)
	if out[2].Exit != 0 {
		h.err = fmt.Sprintf("`%s` failed (exit %d): is iproute2 installed?", cmds[2], out[2].Exit)
		return h, l, false
	}
	t.truncated(n, cmds[2], out[2], "the listener may be missing")
	h.listeners = parseSS(out[2].Stdout)
	if l, found = h.listener(addr, n.Port); !found || len(l.pids) == 0 {
		return h, l, found
	}

	pcmds := processCommands(l.pids, n.Port)
	pout, err := t.exec(ctx, n.IP, pcmds)
	switch {
	case err != nil:
		t.warn("%s: reading the listener's processes and connections failed: %v", n.ID, err)
		n.cut = append(n.cut, "its processes and connections could not be read: "+err.Error())
		return h, l, true
	case len(pout) < len(pcmds):
		t.warn("%s: the probe of the listener's processes answered %d of %d commands", n.ID, len(pout), len(pcmds))
		n.cut = append(n.cut, fmt.Sprintf("the probe of its processes answered %d of %d commands", len(pout), len(pcmds)))
	}
	for i, o := range pout {
		// grep exits 1 when no line names a pid (no other listener, no connection)
		if o.Exit != 0 && !(i > 0 && o.Exit == 1 && o.Stdout == "") {
			t.warn("%s: `%s` failed (exit %d)", n.ID, pcmds[i], o.Exit)
		}
		switch i {
		case 0:
			t.truncated(n, pcmds[i], o, "a process's command line may be missing")
			h.procs = parsePS(o.Stdout)
		case 1:
			t.truncated(n, pcmds[i], o, "the process's other listening ports may be missing")
			for _, s := range parseSS(o.Stdout) {
				if !slices.ContainsFunc(h.listeners, func(x socket) bool { return x.local == s.local }) {
					h.listeners = append(h.listeners, s)
				}
			}
		case 2:
			t.truncated(n, pcmds[i], o, "connections may be missing from the map")
			for _, s := range parseSS(o.Stdout) {
				if s.peer.IsValid() {
					h.conns = append(h.conns, s)
				}
			}
		}
	}
	return h, l, true
}

// run maps from the entry and returns the nodes and edges, sorted.
func (t *traversal) run(ctx context.Context, entry netip.AddrPort) (root string, nodes []api.Node, edges []api.Edge) {
	t.nodes, t.edges = map[string]*nodeState{}, map[[2]string]*api.Edge{}
	root = entry.String()
	t.nodes[root] = &nodeState{Node: api.Node{ID: root, IP: entry.Addr().String(), Port: int(entry.Port())}}
	level := []*nodeState{t.nodes[root]}
	for depth := 0; len(level) > 0; depth++ {
		var next []*nodeState
		var mu sync.Mutex
		sem := make(chan struct{}, max(t.lim.Parallel, 1))
		var wg sync.WaitGroup
		for _, n := range level {
			n.Depth = depth
			if !t.inRanges(entry.Addr()) && n.ID == root {
				// an entry outside the site is refused before mapping; belt and braces
				n.State, n.Reason = api.StateExternal, "outside the site's ranges"
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				found := t.visit(ctx, n)
				mu.Lock()
				defer mu.Unlock()
				for _, tg := range found {
					next = append(next, t.link(n, tg, depth+1)...)
				}
			}()
		}
		wg.Wait()
		level = next
	}
	for _, n := range t.nodes {
		nodes = append(nodes, n.Node)
	}
	sort.Slice(nodes, func(i, j int) bool {
		return nodes[i].Depth < nodes[j].Depth || nodes[i].Depth == nodes[j].Depth && nodes[i].ID < nodes[j].ID
	})
	for _, e := range t.edges {
		if n := t.nodes[e.To]; n != nil && n.State == api.StateUnreachable {
			e.Dead = true
		}
		edges = append(edges, *e)
	}
	sort.Slice(edges, func(i, j int) bool {
		return edges[i].From < edges[j].From || edges[i].From == edges[j].From && edges[i].To < edges[j].To
	})
	return root, nodes, edges
}

// link records the edge from n to a target and returns the new node to visit, if any.
// Callers hold no lock on t.nodes other than run's level mutex: link runs under it.
func (t *traversal) link(n *nodeState, tg target, depth int) []*nodeState {
	id := tg.host + ":" + strconv.Itoa(tg.port)
	if tg.name != "" && tg.host == "" {
		id = tg.name + ":" + strconv.Itoa(tg.port)
	}
	key := [2]string{n.ID, id}
	if e, ok := t.edges[key]; ok {
		if e.FoundBy != tg.by {
			e.FoundBy = api.FoundBoth
		}
		if e.Source == "" {
			e.Source = tg.source
		}
	} else {
		t.edges[key] = &api.Edge{From: n.ID, To: id, FoundBy: tg.by, Source: tg.source}
	}
	if _, ok := t.nodes[id]; ok {
		return nil
	}
	m := &nodeState{Node: api.Node{ID: id, IP: tg.host, Port: tg.port, Name: tg.name, Depth: depth}}
	t.nodes[id] = m
	addr, err := netip.ParseAddr(tg.host)
	switch {
	case tg.host == "":
		m.State, m.Reason = api.StateUnresolved, fmt.Sprintf("%s does not resolve on %s", tg.name, n.IP)
		return nil
	case err != nil:
		m.State, m.Reason = api.StateUnresolved, "not an address"
		return nil
	case !t.inRanges(addr):
		m.State, m.Reason = api.StateExternal, "outside the site's ranges: not probed"
		return nil
	case depth > t.lim.Depth:
		m.State, m.Reason = api.StateDepthLimit, fmt.Sprintf("beyond depth %d: not probed", t.lim.Depth)
		return nil
	case t.lim.MaxNodes > 0 && len(t.nodes) > t.lim.MaxNodes:
		m.State, m.Reason = api.StateDepthLimit, fmt.Sprintf("the map reached %d endpoints: not probed", t.lim.MaxNodes)
		t.warnings = append(t.warnings, fmt.Sprintf("stopped following at %d endpoints (MaxNodes); %s not probed", t.lim.MaxNodes, id))
		return nil
	}
	return []*nodeState{m}
}

// visit identifies the process behind a node and returns where it connects.
func (t *traversal) visit(ctx context.Context, n *nodeState) []target {
	defer func() {
		if len(n.cut) > 0 {
			n.Reason = strings.TrimPrefix(n.Reason+"; "+strings.Join(n.cut, "; "), "; ")
		}
	}()
	addr, _ := netip.ParseAddr(n.IP)
	h, l, ok := t.probeNode(ctx, n, addr)
	n.Hostname, n.os = h.hostname, h.os
	if h.err != "" {
		n.State, n.Reason = api.StateUnreachable, h.err
		return nil
	}
	if !ok {
		n.State, n.Reason = api.StateUnreachable, fmt.Sprintf("nothing listens on %s (ss -ltn)", n.ID)
		return nil
	}
	n.State = api.StateOK
	if len(l.pids) == 0 {
		n.Reason = "ss shows no process for the socket: the credential's user may not see other users' processes (use one that may, or sudo)"
		return nil
	}
	pid := l.pids[0]
	p, ok := h.procs[pid]
	if !ok {
		p = process{pid: pid, comm: l.comms[0]}
	}
	n.PID, n.Process = pid, p.comm
	n.ports = h.ports(l.pids)

	var cands []*Pattern
	for _, pt := range t.patterns.List {
		if pt.candidate(p.comm, p.args, n.Port) {
			cands = append(cands, pt)
		}
	}
	// One probe reads every file the candidates need to be confirmed and to find their
	// connections; each `cat` is its own command so every output names its file.
	type read struct {
		pattern *Pattern
		path    string
		conn    int // -1: a match file
	}
	var reads []read
	var cmds []string
	for _, pt := range cands {
		vars := pt.variables(p.args, n.Port, pid)
		// A server of several processes (nginx's master and workers, Apache's children)
		// shares the socket; ss may name a worker first, whose command line lacks what the
		// master's gives (-c FILE): a variable comes from any process of the socket.
		for _, other := range l.pids[1:] {
			if op, ok := h.procs[other]; ok {
				for k, v := range pt.variables(op.args, n.Port, pid) {
					if _, have := vars[k]; !have {
						vars[k] = v
					}
				}
			}
		}
		for _, f := range pt.Match.Files {
			if path, ok := expandPath(f, vars); ok && safePath(path) {
				reads, cmds = append(reads, read{pt, path, -1}), append(cmds, "cat "+path)
			}
		}
		for ci, c := range pt.Connections {
			for _, f := range c.Files {
				if path, ok := expandPath(f, vars); ok && safePath(path) {
					reads, cmds = append(reads, read{pt, path, ci}), append(cmds, "cat "+path)
				}
			}
		}
	}
	var outs []Output
	if len(cmds) > 0 {
		var err error
		if outs, err = t.exec(ctx, n.IP, cmds); err != nil {
			t.warn("%s: reading configuration failed: %v", n.ID, err)
		}
		for i, o := range outs {
			if i < len(cmds) {
				t.truncated(n, cmds[i], o, "connections it names further on may be missing")
			}
		}
	}
	var chosen *Pattern
	for _, pt := range cands {
		if len(pt.Match.Files) == 0 {
			chosen = pt
			break
		}
		confirmed := false
		for i, r := range reads {
			if r.pattern == pt && r.conn < 0 && i < len(outs) && outs[i].Exit == 0 {
				confirmed = true
			}
		}
		if confirmed {
			chosen = pt
			break
		}
	}
	n.pattern = chosen
	if chosen != nil {
		n.Application, n.Class = chosen.Name, chosen.Class
	} else {
		n.Class = "application"
		n.Reason = fmt.Sprintf("no pattern recognises process %q: its established connections are followed", p.comm)
	}

	var found []target
	seen := map[string]int{}
	add := func(tg target) {
		k := tg.host + "|" + tg.name + "|" + strconv.Itoa(tg.port)
		if i, ok := seen[k]; ok {
			if found[i].by != tg.by {
				found[i].by = api.FoundBoth
			}
			if found[i].source == "" {
				found[i].source = tg.source
			}
			return
		}
		seen[k] = len(found)
		found = append(found, tg)
	}
	if chosen.followsEstablished() {
		for _, c := range h.conns {
			if !slices.ContainsFunc(c.pids, func(x int) bool { return slices.Contains(l.pids, x) }) || h.listensOn(c.local) {
				continue // another process's socket, or an inbound connection to a listener
			}
			if c.peer.Addr().IsLoopback() && !addr.IsLoopback() {
				continue // a local helper (a socket to 127.0.0.1 of its own host)
			}
			add(target{host: c.peer.Addr().String(), port: int(c.peer.Port()), by: api.FoundConnection})
		}
	}
	if chosen != nil {
		var names []string
		var named []target
		for i, r := range reads {
			if r.pattern != chosen || r.conn < 0 || i >= len(outs) || outs[i].Exit != 0 {
				continue
			}
			for _, f := range chosen.Connections[r.conn].Find {
				for _, m := range f.re.FindAllStringSubmatch(outs[i].Stdout, -1) {
					host := m[f.re.SubexpIndex("host")]
					port := f.DefaultPort
					if pi := f.re.SubexpIndex("port"); pi >= 0 && m[pi] != "" {
						port, _ = strconv.Atoi(m[pi])
					}
					if host == "" || port < 1 || port > 65535 {
						continue
					}
					tg := target{host: host, port: port, by: api.FoundConfiguration, source: r.path}
					if a, err := netip.ParseAddr(host); err == nil {
						tg.host = a.String()
						add(tg)
						continue
					}
					tg.name, tg.host = host, ""
					if !safeName.MatchString(host) {
						add(tg) // kept as unresolved, never sent to a shell
						continue
					}
					if !slices.Contains(names, host) {
						names = append(names, host)
					}
					named = append(named, tg)
				}
			}
		}
		if len(names) > 0 {
			resolved := t.resolve(ctx, n.IP, names)
			for _, tg := range named {
				tg.host = resolved[tg.name]
				tg.source += " (" + tg.name + ")"
				if tg.host != "" {
					tg.name = ""
				}
				add(tg)
			}
		}
	}
	return found
}

// safePathRE: what a path sent to `cat` may hold (captured from a command line, it must
// never reach the shell with an operator or a quote).
var safePathRE = regexp.MustCompile(`^/[A-Za-z0-9._/*?\[\]@%+=:,~-]*$`)

func safePath(p string) bool { return safePathRE.MatchString(p) && !strings.Contains(p, "..") }

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$`)

// resolve asks the host itself what the names its configuration gives resolve to
// (getent hosts: /etc/hosts, DNS, whatever its resolver uses).
func (t *traversal) resolve(ctx context.Context, ip string, names []string) map[string]string {
	out := map[string]string{}
	cmds := make([]string, len(names))
	for i, n := range names {
		cmds[i] = "getent hosts " + n
	}
	res, err := t.exec(ctx, ip, cmds)
	if err != nil {
		t.warn("%s: resolving %s failed: %v", ip, strings.Join(names, ", "), err)
		return out
	}
	for i, r := range res {
		if i >= len(names) {
			break
		}
		for _, line := range strings.Split(r.Stdout, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 {
				continue
			}
			if a, err := netip.ParseAddr(f[0]); err == nil && a.Is4() {
				out[names[i]] = a.String()
				break
			}
		}
	}
	return out
}
