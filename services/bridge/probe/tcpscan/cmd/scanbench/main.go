// Command scanbench measures tcp_scan on a lab /22 against nmap -sT -T4 and a minimal Go
// connect loop (the kernel's connect() rate), in the same run, and prints one markdown
// table row per scanner. scripts/scanbench.sh runs it twice: on plain loopback, and inside
// a network namespace where nftables drops SYNs to a quarter of the range (-filtered).
//
// With -through-hub CMD, CMD (run with sh -c) scans the same lab through a hub and a
// bridge: it gets SCANBENCH_RANGE, SCANBENCH_PORTS (comma list) and SCANBENCH_OUT, and
// writes its results to SCANBENCH_OUT as JSON (tcp_scan chunks or results; every object
// with "ip" and "open" counts) or as lines "ip:port" / "ip port".
//
// It only ever binds and scans 127.0.0.0/8.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/tcpscan"
)

var loopback = netip.MustParsePrefix("127.0.0.0/8")

type openSet map[netip.AddrPort]bool

type row struct {
	scanner string
	wall    time.Duration
	killed  bool
	set     openSet
	err     error
	walls   []time.Duration
	// allRounds are every round's results (identity is checked on each)
	allRounds []row
}

// median is the round with the median wall time (a killed round wins: it is a bound).
func median(rs []row) row {
	if len(rs) == 0 {
		return row{}
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b row) int { return int(a.wall - b.wall) })
	m := sorted[(len(sorted)-1)/2]
	for _, r := range rs {
		if r.killed {
			m = r
		}
	}
	m.walls = nil
	for _, r := range rs {
		m.walls = append(m.walls, r.wall)
	}
	m.allRounds = rs
	return m
}

// realClock times the scanners: a benchmark measures wall time.
var realClock = clock.Real()

func main() {
	cidr := flag.String("range", "127.77.176.0/22", "lab range, scanned whole")
	hosts := flag.Int("hosts", 1000, "lab hosts")
	seed := flag.Int64("seed", 7, "lab seed")
	portsFlag := flag.String("ports", "top100", "ports (tcp_scan syntax)")
	filtered := flag.String("filtered", "", "part of the range whose SYNs are dropped (label and truth only: the script sets up nftables)")
	label := flag.String("case", "plain loopback", "name of the case in the table")
	nmapTimeout := flag.Duration("nmap-timeout", 300*time.Second, "bound on nmap's run")
	hub := flag.String("through-hub", "", "command that scans through hub and bridge (see package doc)")
	rounds := flag.Int("rounds", 3, "runs of each scanner; the median wall time is reported")
	header := flag.Bool("header", true, "print the table header")
	inflight := flag.Int("in-flight", 0, "tcp_scan max_in_flight (default: the kind's default)")
	loopWorkers := flag.Int("loop-workers", 1024, "goroutines of the connect loop")
	serveLab := flag.String("serve-lab", "", "internal: run only the lab and write its manifest to this file")
	only := flag.String("only", "", "comma list of scanners to run (ours,ours-dial,loop,nmap,hub); default all")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("scanbench: ")

	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil || !loopback.Contains(prefix.Addr()) || prefix.Bits() < 8 {
		log.Fatalf("-range %q: want a CIDR inside 127.0.0.0/8", *cidr)
	}
	var filt netip.Prefix
	if *filtered != "" {
		if filt, err = netip.ParsePrefix(*filtered); err != nil || !prefix.Overlaps(filt) {
			log.Fatalf("-filtered %q: want a CIDR inside -range", *filtered)
		}
	}
	ports, err := tcpscan.ParsePorts(strings.Split(*portsFlag, ","))
	if err != nil {
		log.Fatalf("-ports: %v", err)
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s != "" {
			want[s] = true
		}
	}
	run := func(s string) bool { return len(want) == 0 || want[s] }

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *serveLab != "" {
		// the lab runs in a process of its own, like the targets of a real scan: the
		// scanners do not share a Go scheduler with thousands of listeners
		l, err := lab.Start(ctx, lab.Config{Range: prefix.String(), Hosts: *hosts, Seed: *seed})
		if err != nil {
			log.Fatal(err)
		}
		if err := l.WriteManifest(*serveLab); err != nil {
			log.Fatal(err)
		}
		<-ctx.Done()
		l.Close()
		return
	}
	m, stopLab, err := startLab(ctx, prefix, *hosts, *seed)
	if err != nil {
		log.Fatal(err)
	}
	defer stopLab()
	truth := manifestSet(m, ports, filt)
	addrs := all(prefix)
	probes := len(addrs) * len(ports)
	log.Printf("lab %s: %d hosts, %d addresses × %d ports = %d probes, %d open in the manifest%s",
		prefix, *hosts, len(addrs), len(ports), probes, len(truth), map[bool]string{true: ", " + filt.String() + " filtered"}[filt.IsValid()])

	// Each scanner runs -rounds times, interleaved, and the median wall time is reported:
	// the machine is shared and single runs move a lot. nmap stops after a round it did not
	// finish within its bound.
	type scanner struct {
		name string
		run  func() row
	}
	var scanners []scanner
	if run("ours") {
		scanners = append(scanners, scanner{"ours", func() row { return ours(ctx, prefix, ports, *inflight, "raw") }})
	}
	if run("ours-dial") {
		scanners = append(scanners, scanner{"ours-dial", func() row { return ours(ctx, prefix, ports, *inflight, "dial") }})
	}
	if run("loop") {
		scanners = append(scanners, scanner{"loop", func() row { return connectLoop(ctx, addrs, ports, *loopWorkers) }})
	}
	if *hub != "" && run("hub") {
		scanners = append(scanners, scanner{"hub", func() row { return throughHub(ctx, *hub, prefix, ports) }})
	}
	if run("nmap") {
		scanners = append(scanners, scanner{"nmap", func() row { return nmap(ctx, prefix, ports, *nmapTimeout) }})
	}
	results := make([][]row, len(scanners))
	for round := 0; round < max(1, *rounds); round++ {
		for i, sc := range scanners {
			if n := len(results[i]); n > 0 && (results[i][n-1].killed || results[i][n-1].err != nil) {
				continue
			}
			r := sc.run()
			log.Printf("round %d: %s %.2f s, %d open", round+1, r.scanner, r.wall.Seconds(), len(r.set))
			results[i] = append(results[i], r)
		}
	}
	var rows []row
	for _, rs := range results {
		rows = append(rows, median(rs))
	}

	var loopWall, nmapWall time.Duration
	nmapKilled := false
	for _, r := range rows {
		switch r.scanner {
		case "minimal Go connect loop":
			loopWall = r.wall
		case "nmap -sT -T4 -n -Pn":
			nmapWall, nmapKilled = r.wall, r.killed
		}
	}
	if *header {
		fmt.Println("| case | scanner | wall time | probes/s | open ports found | identical to the manifest | vs connect loop | vs nmap |")
		fmt.Println("|---|---|---|---|---|---|---|---|")
	}
	for _, r := range rows {
		wall := fmt.Sprintf("%.1f s", r.wall.Seconds())
		if len(r.walls) > 1 {
			w := make([]string, len(r.walls))
			for i, x := range r.walls {
				w[i] = fmt.Sprintf("%.1f", x.Seconds())
			}
			wall = fmt.Sprintf("%.1f s (%s)", r.wall.Seconds(), strings.Join(w, " / "))
		}
		rate := fmt.Sprintf("%.0f", float64(probes)/r.wall.Seconds())
		ok := len(r.allRounds) > 0
		for _, x := range r.allRounds {
			ok = ok && equal(x.set, truth)
		}
		same := map[bool]string{true: "yes", false: "no"}[ok]
		if len(r.allRounds) > 1 && ok {
			same = fmt.Sprintf("yes (%d of %d rounds)", len(r.allRounds), len(r.allRounds))
		} else if len(r.allRounds) > 1 {
			n := 0
			for _, x := range r.allRounds {
				if equal(x.set, truth) {
					n++
				}
			}
			same = fmt.Sprintf("no (%d of %d rounds)", n, len(r.allRounds))
		}
		found := strconv.Itoa(len(r.set))
		if r.killed {
			wall = fmt.Sprintf("> %.0f s (killed)", nmapTimeout.Seconds())
			rate = fmt.Sprintf("< %.0f", float64(probes)/nmapTimeout.Seconds())
			same, found = "n/a (killed)", "—"
		}
		if r.err != nil {
			same = "error: " + strings.ReplaceAll(r.err.Error(), "|", "/")
		}
		vsLoop, vsNmap := "—", "—"
		if loopWall > 0 && r.scanner != "minimal Go connect loop" && !r.killed {
			vsLoop = fmt.Sprintf("%.2f×", loopWall.Seconds()/r.wall.Seconds())
		}
		if nmapWall > 0 && r.scanner != "nmap -sT -T4 -n -Pn" && !r.killed {
			op := ""
			if nmapKilled {
				op = "> "
			}
			vsNmap = fmt.Sprintf("%s%.2f×", op, nmapWall.Seconds()/r.wall.Seconds())
		}
		fmt.Printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", *label, r.scanner, wall, rate, found, same, vsLoop, vsNmap)
	}
}

// startLab runs the lab in a child process (this program with -serve-lab) and waits for
// its manifest.
func startLab(ctx context.Context, prefix netip.Prefix, hosts int, seed int64) (lab.Manifest, func(), error) {
	var m lab.Manifest
	dir, err := os.MkdirTemp("", "scanbench-lab-")
	if err != nil {
		return m, nil, err
	}
	manifest := dir + "/lab.json"
	self, err := os.Executable()
	if err != nil {
		return m, nil, err
	}
	cmd := exec.Command(self, "-serve-lab", manifest, "-range", prefix.String(), "-hosts", strconv.Itoa(hosts), "-seed", strconv.FormatInt(seed, 10))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return m, nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		os.RemoveAll(dir)
	}
	for deadline := realClock.Now().Add(2 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(manifest); err == nil {
			if err := json.Unmarshal(b, &m); err != nil {
				stop()
				return m, nil, err
			}
			return m, stop, nil
		}
		if realClock.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return m, nil, errors.New("the lab did not start in time")
		}
	}
}

func all(p netip.Prefix) []netip.Addr {
	var out []netip.Addr
	for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
		out = append(out, a)
	}
	return out
}

func manifestSet(m lab.Manifest, ports []uint16, filtered netip.Prefix) openSet {
	set := openSet{}
	for _, h := range m.Hosts {
		a := netip.MustParseAddr(h.IP)
		if filtered.IsValid() && filtered.Contains(a) {
			continue
		}
		for _, p := range h.OpenTCP {
			if slices.Contains(ports, uint16(p)) {
				set[netip.AddrPortFrom(a, uint16(p))] = true
			}
		}
	}
	return set
}

func equal(a, b openSet) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// ours runs the tcp_scan runner directly, the bridge's rate budget lifted, defaults otherwise.
func ours(ctx context.Context, prefix netip.Prefix, ports []uint16, inFlight int, engine string) row {
	f := tcpscan.NewFactory()
	cfg := f.DefaultConfig().(tcpscan.Config)
	cfg.Engine = engine
	cfg.Rate = 0 // the bridge's budget (shared by its scans; a probe can only lower its own)
	set := probe.Settings{Allowed: func(ip net.IP) bool {
		a, ok := netip.AddrFromSlice(ip)
		return ok && loopback.Contains(a.Unmap())
	}}
	name := map[string]string{"raw": "tcp_scan (runner, raw engine)", "dial": "tcp_scan (runner, engine dial: Settings.Dial)"}[engine]
	r, err := f.Create(ctx, set, cfg)
	if err != nil {
		return row{scanner: name, err: err}
	}
	params, _ := json.Marshal(map[string]any{"targets": prefix.String(), "ports": portList(ports), "max_in_flight": inFlight})
	found := openSet{}
	var mu sync.Mutex
	emit := func(_ context.Context, data any) error {
		mu.Lock()
		defer mu.Unlock()
		for _, h := range data.(tcpscan.Chunk).Hosts {
			for _, p := range h.Open {
				found[netip.AddrPortFrom(netip.MustParseAddr(h.IP), uint16(p))] = true
			}
		}
		return nil
	}
	t0 := realClock.Now()
	res, err := r.Run(ctx, probe.Request{Params: params}, emit)
	wall := realClock.Since(t0)
	if s, ok := res.(*tcpscan.Summary); ok {
		log.Printf("tcp_scan (%s engine): %d probes (%d retries) in %s, %d open, %d closed, %d filtered, %d chunks",
			s.Engine, s.Probes, s.Retries, wall.Round(time.Millisecond), s.Open, s.Closed, s.Filtered, s.Chunks)
	}
	return row{scanner: name, wall: wall, set: found, err: err}
}

// connectLoop is the floor: 1,024 goroutines doing net.DialTimeout with 500 ms, once.
func connectLoop(ctx context.Context, addrs []netip.Addr, ports []uint16, workers int) row {
	type target struct {
		a netip.Addr
		p uint16
	}
	targets := make([]target, 0, len(addrs)*len(ports))
	for _, a := range addrs {
		for _, p := range ports {
			targets = append(targets, target{a, p})
		}
	}
	var next atomic.Int64
	var mu sync.Mutex
	found := openSet{}
	var wg sync.WaitGroup
	t0 := realClock.Now()
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(targets)) {
					return
				}
				ap := netip.AddrPortFrom(targets[i].a, targets[i].p)
				c, err := net.DialTimeout("tcp", ap.String(), 500*time.Millisecond)
				if err == nil {
					c.Close()
					mu.Lock()
					found[ap] = true
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return row{scanner: "minimal Go connect loop", wall: realClock.Since(t0), set: found, err: ctx.Err()}
}

func nmap(ctx context.Context, prefix netip.Prefix, ports []uint16, bound time.Duration) row {
	r := row{scanner: "nmap -sT -T4 -n -Pn"}
	if _, err := exec.LookPath("nmap"); err != nil {
		r.err = errors.New("nmap not installed")
		return r
	}
	cctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nmap", "-sT", "-T4", "-n", "-Pn", "-p", portList(ports), "-oG", "-", prefix.String())
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	t0 := realClock.Now()
	err := cmd.Run()
	r.wall = realClock.Since(t0)
	if cctx.Err() == context.DeadlineExceeded {
		r.killed = true
		return r
	}
	if err != nil {
		r.err = err
		return r
	}
	r.set = parseGrepable(out.Bytes())
	return r
}

// parseGrepable reads nmap -oG: "Host: 1.2.3.4 ()\tPorts: 22/open/tcp//ssh///, ...".
func parseGrepable(b []byte) openSet {
	set := openSet{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "Host: ") {
			continue
		}
		_, portsPart, ok := strings.Cut(line, "Ports: ")
		if !ok {
			continue
		}
		a, err := netip.ParseAddr(strings.Fields(line)[1])
		if err != nil {
			continue
		}
		portsPart, _, _ = strings.Cut(portsPart, "\t")
		for _, e := range strings.Split(portsPart, ",") {
			f := strings.Split(strings.TrimSpace(e), "/")
			if len(f) > 2 && f[1] == "open" {
				if p, err := strconv.Atoi(f[0]); err == nil {
					set[netip.AddrPortFrom(a, uint16(p))] = true
				}
			}
		}
	}
	return set
}

func throughHub(ctx context.Context, command string, prefix netip.Prefix, ports []uint16) row {
	r := row{scanner: "tcp_scan through hub and bridge"}
	out, err := os.CreateTemp("", "scanbench-hub-*.out")
	if err != nil {
		r.err = err
		return r
	}
	out.Close()
	defer os.Remove(out.Name())
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	cmd.Env = append(os.Environ(), "SCANBENCH_RANGE="+prefix.String(), "SCANBENCH_PORTS="+portList(ports), "SCANBENCH_OUT="+out.Name())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	t0 := realClock.Now()
	err = cmd.Run()
	r.wall = realClock.Since(t0)
	if err != nil {
		r.err = err
		return r
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		r.err = err
		return r
	}
	r.set = parseResults(b)
	return r
}

// parseResults reads JSON values (any object with "ip" and "open" counts) or
// "ip:port" / "ip port" lines.
func parseResults(b []byte) openSet {
	set := openSet{}
	t := bytes.TrimSpace(b)
	if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		dec := json.NewDecoder(bytes.NewReader(t))
		for {
			var v any
			if err := dec.Decode(&v); err != nil {
				if err != io.EOF {
					log.Printf("through-hub output: %v", err)
				}
				break
			}
			walk(v, set)
		}
		return set
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if ap, err := netip.ParseAddrPort(line); err == nil {
			set[ap] = true
			continue
		}
		if f := strings.Fields(line); len(f) == 2 {
			a, err1 := netip.ParseAddr(f[0])
			p, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil {
				set[netip.AddrPortFrom(a, uint16(p))] = true
			}
		}
	}
	return set
}

func walk(v any, set openSet) {
	switch x := v.(type) {
	case map[string]any:
		if ip, ok := x["ip"].(string); ok {
			if open, ok := x["open"].([]any); ok {
				if a, err := netip.ParseAddr(ip); err == nil {
					for _, p := range open {
						if f, ok := p.(float64); ok {
							set[netip.AddrPortFrom(a, uint16(f))] = true
						}
					}
				}
			}
		}
		for _, c := range x {
			walk(c, set)
		}
	case []any:
		for _, c := range x {
			walk(c, set)
		}
	}
}
