//go:build linux

package e2e

// The WAN between the hub and a site is cut for wanCut in the middle of a discovery, then
// restored: the run completes with every host classified, nothing lost, nothing twice.
//
// With root, ip(8) and nft(8) the hub and the site are two network namespaces made here,
// joined by a veth pair addressed from 198.18.0.0/15 (the benchmarking range: nothing else
// exists in these namespaces, no route leads anywhere else); the site refuses inbound
// connections (nftables) and the test proves it; the cut is `ip link set down` of the
// site's end. The lab runs in the site's namespace, on 127.77.x addresses of its own
// loopback. Without them the link is an in-process TCP proxy that closes every connection
// and refuses new ones for the cut.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/status"
	"github.com/outpost-dev/outpost/services/outpost/hub"
)

// wanCut is how long the link stays down: the two minutes, longer than the NATS
// client's ping interval and the JetStream AckWait of a probe, so the connection really dies
// and deliveries time out.
const wanCut = 2 * time.Minute

const (
	wanHubIP  = "198.18.0.1"
	wanSiteIP = "198.18.0.2"
)

// inNetns runs f on an OS thread moved into the named network namespace: sockets f opens
// live there. The thread is not returned to the scheduler (the goroutine ends locked, so the
// runtime discards it).
func inNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join("/var/run/netns", ns), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", ns, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// nsDialer dials from inside a network namespace (HTTP transports, NATS' custom dialer).
type nsDialer struct{ ns string }

func (d nsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(d.ns, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

func (d nsDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

// wanLink is the link between the hub and the site.
type wanLink interface {
	cut(t *testing.T)
	restore(t *testing.T)
	// hubReachable dials the hub's NATS from the site's side.
	hubReachable() error
}

// netnsWAN is two namespaces and the veth pair between them.
type netnsWAN struct {
	hubNS, siteNS, hubIf, siteIf string
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetnsWAN makes the namespaces, or says why it cannot.
func newNetnsWAN(t *testing.T) (*netnsWAN, string) {
	if os.Getenv("OUTPOST_WAN_PROXY") != "" {
		return nil, "OUTPOST_WAN_PROXY is set" // to run the fallback where namespaces work
	}
	if os.Geteuid() != 0 {
		return nil, "network namespaces need root"
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, tool + " is not installed (Debian packages iproute2, nftables; .ci/run installs them)"
		}
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	w := &netnsWAN{hubNS: "opwan-hub-" + id, siteNS: "opwan-site-" + id, hubIf: "opw" + id + "h", siteIf: "opw" + id + "s"}
	if err := run("ip", "netns", "add", w.hubNS); err != nil {
		return nil, fmt.Sprintf("cannot create a network namespace here (%v)", err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", w.hubNS) })
	if err := run("ip", "netns", "add", w.siteNS); err != nil {
		return nil, fmt.Sprintf("cannot create a network namespace here (%v)", err)
	}
	t.Cleanup(func() { _ = run("ip", "netns", "del", w.siteNS) }) // takes the veth pair with it
	// the pair is made inside the hub's namespace: nothing is ever added to the host's
	steps := [][]string{
		{"ip", "-n", w.hubNS, "link", "add", w.hubIf, "type", "veth", "peer", "name", w.siteIf, "netns", w.siteNS},
		{"ip", "-n", w.hubNS, "addr", "add", wanHubIP + "/30", "dev", w.hubIf},
		{"ip", "-n", w.siteNS, "addr", "add", wanSiteIP + "/30", "dev", w.siteIf},
		{"ip", "-n", w.hubNS, "link", "set", "lo", "up"},
		{"ip", "-n", w.siteNS, "link", "set", "lo", "up"},
		{"ip", "-n", w.hubNS, "link", "set", w.hubIf, "up"},
		{"ip", "-n", w.siteNS, "link", "set", w.siteIf, "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatalf("netns setup: %v", err)
		}
	}
	return w, ""
}

// outboundOnly makes the site drop inbound new connections from the WAN, and proves it: a
// connection from the hub's namespace to a listener in the site's succeeds before the rule
// and fails after it.
func (w *netnsWAN) outboundOnly(t *testing.T) {
	var ln net.Listener
	if err := inNetns(w.siteNS, func() error {
		var err error
		ln, err = net.Listen("tcp", wanSiteIP+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := nsDialer{w.hubNS}.DialContext(ctx, "tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(); err != nil {
		t.Fatalf("before the firewall, hub → site %s: %v (the proof below would prove nothing)", ln.Addr(), err)
	}
	rules := fmt.Sprintf(`table inet outpost_wan {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname %q ct state new drop
	}
}
`, w.siteIf)
	cmd := exec.Command("ip", "netns", "exec", w.siteNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	if err := dial(); err == nil {
		t.Fatalf("hub → site %s connected through the firewall: the site is not outbound-only", ln.Addr())
	} else {
		t.Logf("outbound-only: hub → site %s refused (%v)", ln.Addr(), err)
	}
}

func (w *netnsWAN) hubReachable() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := nsDialer{w.siteNS}.DialContext(ctx, "tcp", wanHubIP+":4222")
	if err == nil {
		c.Close()
	}
	return err
}

func (w *netnsWAN) cut(t *testing.T) {
	if err := run("ip", "-n", w.siteNS, "link", "set", w.siteIf, "down"); err != nil {
		t.Fatal(err)
	}
}

func (w *netnsWAN) restore(t *testing.T) {
	if err := run("ip", "-n", w.siteNS, "link", "set", w.siteIf, "up"); err != nil {
		t.Fatal(err)
	}
}

// tcpProxy forwards a loopback port to the hub's NATS; cut closes every connection and
// refuses new ones until restore.
type tcpProxy struct {
	addr, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]bool
}

func startTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{addr: freeAddr(t), target: target, conns: map[net.Conn]bool{}}
	p.restore(t)
	t.Cleanup(func() { p.cut(t) })
	return p
}

func (p *tcpProxy) restore(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *tcpProxy) hubReachable() error {
	c, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

func (p *tcpProxy) cut(*testing.T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func TestWANCutLosesNothing(t *testing.T) {
	t.Parallel()
	const site = "wan"
	dir := t.TempDir()
	var (
		h      *testHub
		link   wanLink
		cidr   string
		m      lab.Manifest
		natsNS string // the namespace the hub's NATS is reached from ("" : this one)
		bdir   = filepath.Join(t.TempDir(), "br1")
	)
	hosts, seed := 30, int64(23)
	w, why := newNetnsWAN(t)
	if w != nil {
		t.Logf("network namespaces %s (hub, %s) and %s (site, %s); cut %s", w.hubNS, wanHubIP, w.siteNS, wanSiteIP, wanCut)
		w.outboundOnly(t)
		link, natsNS = w, w.hubNS
		cidr = "127.77.90.0/26"
		// the lab, in the site's namespace: its 127.77.x addresses exist only there
		manifest := filepath.Join(dir, "lab-manifest.json")
		startIn(t, w.siteNS, "outpost", "lab", "--range", cidr, "--hosts", fmt.Sprint(hosts), "--seed", fmt.Sprint(seed), "--manifest", manifest)
		eventually(t, 30*time.Second, func() error {
			b, err := os.ReadFile(manifest)
			if err != nil {
				return err
			}
			return json.Unmarshal(b, &m)
		})
		h = &testHub{dir: dir, http: "127.0.0.1:18080", nats: wanHubIP + ":4222",
			client: &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: nsDialer{w.hubNS}.DialContext}}}
		h.proc = startIn(t, w.hubNS, "outpost", "up", "--data", dir, "--http", h.http, "--nats", h.nats, "--no-local-bridge")
		eventually(t, 30*time.Second, func() error {
			resp, err := h.httpClient().Get("http://" + h.http + "/healthz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("healthz %d", resp.StatusCode)
			}
			return nil
		})
		tok := h.addSite(t, site, cidr, true)
		startIn(t, w.siteNS, "outpost-bridge", "--hub", "tls://"+h.nats, "--ca", filepath.Join(dir, hub.TLSDir, "ca.pem"),
			"--site", site, "--name", "br1", "--token", tok, "--data", bdir)
	} else {
		t.Logf("no network namespaces (%s): the WAN is an in-process TCP proxy; cut %s", why, wanCut)
		cidr = "127.77.91.0/26"
		l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: hosts, Seed: seed})
		if err != nil {
			t.Skipf("lab: %v", err)
		}
		t.Cleanup(func() { _ = l.Close() })
		m = l.Manifest()
		h = startHub(t, dir)
		proxy := startTCPProxy(t, h.nats)
		link = proxy
		tok := h.addSite(t, site, cidr, true)
		start(t, "outpost-bridge", "--hub", "nats://"+proxy.addr, "--site", site, "--name", "br1", "--token", tok, "--data", bdir)
	}
	h.waitStatus(t, "br1", "up")
	labCredentials(t, h, site, m)

	id := startDiscovery(t, h, site, cidr)
	// mid-discovery: the run has found live hosts and is still at work
	var before discoveryRun
	eventually(t, 2*time.Minute, func() error {
		code, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id, nil)
		r := &before
		*r = discoveryRun{}
		if code != 200 || json.Unmarshal(b, r) != nil {
			return fmt.Errorf("run_get %d %s", code, b)
		}
		if r.State == "completed" || r.State == "failed" {
			t.Fatalf("run %s %s before the cut (%+v): make the lab bigger", id, r.State, r.Counters)
		}
		if r.Counters.Alive == 0 {
			return fmt.Errorf("run %s: no live host yet %+v", id, r.Counters)
		}
		return nil
	})
	if err := link.hubReachable(); err != nil {
		t.Fatalf("before the cut the site cannot reach the hub: %v", err)
	}
	link.cut(t)
	t.Logf("link cut at %s, run %s %s %+v", time.Now().Format(time.TimeOnly), id, before.State, before.Counters)
	if err := link.hubReachable(); err == nil {
		t.Fatal("the link is cut but the site still reaches the hub")
	}
	// while it is down: what the bridge says of itself (its status file)
	var maxOutbox int64
	disconnected := false
	for end := time.Now().Add(wanCut); time.Now().Before(end); time.Sleep(time.Second) {
		if st, err := status.Read(bdir); err == nil {
			maxOutbox = max(maxOutbox, st.Outbox.Results)
			disconnected = disconnected || !st.Hub.Connected
		}
	}
	link.restore(t)
	// The bridge does not always notice a dead link within the cut (its connection may stay
	// "connected" with writes timing out): logged, not asserted — the cut itself is proven
	// by hubReachable above.
	t.Logf("link restored; during the cut the bridge saw the hub disconnected: %v, held up to %d results in its outbox", disconnected, maxOutbox)
	eventually(t, 30*time.Second, link.hubReachable)

	r := waitDiscovery(t, h, id, 5*time.Minute)
	if r.State != "completed" {
		t.Fatalf("run %s after the cut: %s %s %+v", id, r.State, r.Reason, r.Counters)
	}
	// nothing lost: every host of the lab classified as the manifest says
	classes := map[string]string{}
	for _, hb := range r.Hosts {
		classes[hb.IP] = hb.Class
	}
	linux := 0
	var lost []string
	for _, mh := range m.Hosts {
		if classes[mh.IP] != mh.Class {
			lost = append(lost, fmt.Sprintf("%s (%s): class %q, manifest %q", mh.IP, mh.Name, classes[mh.IP], mh.Class))
			// what discovery tried on it, for whoever reads the failure
			if code, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id+"?host="+mh.IP, nil); code == 200 {
				var v struct {
					Host struct {
						Log []json.RawMessage `json:"log"`
					} `json:"host"`
				}
				_ = json.Unmarshal(b, &v)
				for _, l := range v.Host.Log {
					t.Logf("  %s: %s", mh.IP, l)
				}
			}
		}
		if mh.Class == "linux_server" {
			linux++
		}
	}
	if c := r.Counters; c.Ingested != c.Classified || c.PayloadsSent < c.Classified {
		t.Errorf("payloads: %+v: every classified host's payload and receipt once", c)
	}
	// nothing twice: one CI per server, one stored result per result id, an empty DLQ
	if len(lost) == 0 {
		eventually(t, 30*time.Second, func() error {
			if got := ciCount(t, h, "linux_server"); got != linux {
				return fmt.Errorf("linux_server CIs %d, manifest %d", got, linux)
			}
			return nil
		})
	}
	opts := []nats.Option{nats.MaxReconnects(-1)}
	if natsNS != "" {
		opts = append(opts, nats.SetCustomDialer(nsDialer{natsNS}), nats.RootCAs(filepath.Join(dir, hub.TLSDir, "ca.pem")))
	}
	auth, err := hub.ServiceAuth(dir)
	if err != nil {
		t.Fatal(err)
	}
	scheme := "nats://"
	if natsNS != "" {
		scheme = "tls://"
	}
	nc, err := nats.Connect(scheme+h.nats, append(opts, auth)...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ids, dups := resultIDs(t, js, bus.ResultSubject("discovery", site, "*", "*"))
	if len(ids) == 0 {
		t.Fatal("no result of the run in RESULTS: the check would prove nothing")
	}
	if len(dups) > 0 {
		t.Errorf("results stored twice: %v", dups)
	}
	if info, err := js.Stream(context.Background(), bus.StreamDLQ); err == nil && info.CachedInfo().State.Msgs > 0 {
		t.Errorf("DLQ holds %d messages after the cut", info.CachedInfo().State.Msgs)
	}
	// probes that passed their deadline during the cut (they left PROBES with their TTL
	// unread) were sent again once it was over (services/discovery, expire)
	t.Logf("run %s: %d hosts classified, %d results, none twice; %d probes sent again after their deadline", id, r.Counters.Classified, len(ids), r.Counters.ProbesResent)
	if len(lost) > 0 {
		// the run's own log and errors say which probes the cut cost
		if code, b := h.api(t, "GET", "/api/v1/discovery/runs/"+id, nil); code == 200 {
			var v struct {
				Log    []string `json:"log"`
				Errors []string `json:"errors"`
			}
			_ = json.Unmarshal(b, &v)
			for _, l := range append(v.Log, v.Errors...) {
				t.Logf("  run: %s", l)
			}
		}
		t.Errorf("%d of %d hosts lost their classification to the %s cut (%d probes were sent again after their deadline):\n  %s",
			len(lost), len(m.Hosts), wanCut, r.Counters.ProbesResent, strings.Join(lost, "\n  "))
	}
}

// resultIDs reads every stored result on subject (ordered consumer) and returns their
// message ids and those seen more than once.
func resultIDs(t *testing.T, js jetstream.JetStream, subject string) (ids map[string]int, dups []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, bus.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	ids = map[string]int{}
	for {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			id := msg.Headers().Get("Nats-Msg-Id")
			ids[id]++
			if ids[id] == 2 {
				dups = append(dups, id)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatal(err)
		}
		if n == 0 {
			return ids, dups
		}
	}
}
