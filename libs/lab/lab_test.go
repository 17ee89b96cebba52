package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
)

// Address ranges of this package's tests (the rest of the project uses other
// 127.77.x ranges): 127.77.200.0/24 to 127.77.207.0/24, 127.77.208.0/22 for
// the large lab, 127.77.250.0/24 (plans only, nothing bound).

// refTime is the fixed clock of the tests: certificates are relative to it.
var refTime = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func startLab(t testing.TB, cidr string, hosts int, mod ...func(*lab.Config)) *lab.Lab {
	t.Helper()
	cfg := lab.Config{Range: cidr, Hosts: hosts, Seed: 7, Now: func() time.Time { return refTime }}
	for _, m := range mod {
		m(&cfg)
	}
	l, err := lab.Start(context.Background(), cfg)
	if errors.Is(err, syscall.EACCES) {
		t.Skipf("the lab binds well-known ports: run as root or with CAP_NET_BIND_SERVICE (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

func hostile(c *lab.Config) { c.Hostile = true }

func TestConfigValidate(t *testing.T) {
	if err := lab.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cases := []struct {
		cfg  lab.Config
		want []string
	}{
		{lab.Config{Range: "10.0.0.0/24", Hosts: 10}, []string{"outside 127.0.0.0/8"}},
		{lab.Config{Range: "0.0.0.0/0", Hosts: 10}, []string{"outside 127.0.0.0/8"}},
		{lab.Config{Range: "::1/128", Hosts: 10}, []string{"IPv4"}},
		{lab.Config{Range: "nonsense", Hosts: 0}, []string{"not a CIDR", "at least 1"}},
		{lab.Config{Range: "127.77.0.0/29", Hosts: 6, Hostile: true}, []string{"6 usable addresses", "needs 9"}},
		{lab.Config{Range: "127.77.0.0/16", Hosts: lab.MaxHosts + 1}, []string{"at most"}},
		{lab.Config{Range: "127.77.0.0/24", Hosts: 10, Stride: 30}, []string{"254 usable addresses", "needs 271"}},
		{lab.Config{Range: "127.77.0.0/24", Hosts: 1, Stride: -1}, []string{"stride -1"}},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if err == nil {
			t.Errorf("%+v: no error", c.cfg)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q lacks %q", c.cfg, err, w)
			}
		}
	}
	if _, err := lab.Start(context.Background(), lab.Config{Range: "192.168.1.0/24", Hosts: 3}); err == nil {
		t.Fatal("Start accepted a range outside loopback")
	}
}

func TestManifestIsDeterministic(t *testing.T) {
	// plans only: compare manifests of labs started one after the other
	get := func(mod ...func(*lab.Config)) []byte {
		l := startLabNoCleanup(t, "127.77.200.0/24", 60, mod...)
		defer l.Close()
		b, err := json.Marshal(l.Manifest())
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := get(), get()
	if !bytes.Equal(a, b) {
		t.Fatal("two labs with the same seed and range have different manifests")
	}
	c := get(func(c *lab.Config) { c.Seed = 8 })
	if bytes.Equal(a, c) {
		t.Fatal("a different seed gives the same manifest")
	}
	// hostile hosts are added after the simulated ones, which do not change
	var plain, withHostile lab.Manifest
	json.Unmarshal(a, &plain)
	json.Unmarshal(get(hostile), &withHostile)
	if len(withHostile.Hosts) != 60+lab.HostileHosts {
		t.Fatalf("hostile lab has %d hosts", len(withHostile.Hosts))
	}
	pa, _ := json.Marshal(plain.Hosts)
	pb, _ := json.Marshal(withHostile.Hosts[:60])
	if !bytes.Equal(pa, pb) {
		t.Fatal("Hostile changed the simulated hosts")
	}
	// the file written is the manifest
	l := startLab(t, "127.77.200.0/24", 60)
	path := filepath.Join(t.TempDir(), "lab.json")
	if err := l.WriteManifest(path); err != nil {
		t.Fatal(err)
	}
	onDisk, _ := os.ReadFile(path)
	var m lab.Manifest
	if err := json.Unmarshal(onDisk, &m); err != nil {
		t.Fatal(err)
	}
	if mb, _ := json.Marshal(m); !bytes.Equal(mb, a) {
		t.Fatal("written manifest differs from Manifest()")
	}
}

func startLabNoCleanup(t testing.TB, cidr string, hosts int, mod ...func(*lab.Config)) *lab.Lab {
	t.Helper()
	cfg := lab.Config{Range: cidr, Hosts: hosts, Seed: 7, Now: func() time.Time { return refTime }}
	for _, m := range mod {
		m(&cfg)
	}
	l, err := lab.Start(context.Background(), cfg)
	if errors.Is(err, syscall.EACCES) {
		t.Skipf("the lab binds well-known ports: run as root or with CAP_NET_BIND_SERVICE (%v)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestManifestShape(t *testing.T) {
	l := startLab(t, "127.77.200.0/24", 60, hostile)
	m := l.Manifest()
	if m.Range != "127.77.200.0/24" || m.Seed != 7 || !m.ReferenceTime.Equal(refTime.Truncate(24*time.Hour)) {
		t.Fatalf("header: %q %d %v", m.Range, m.Seed, m.ReferenceTime)
	}
	count := map[string]int{}
	names := map[string]bool{}
	macs := map[string]string{}
	serials := map[string][]string{}
	for i, h := range m.Hosts {
		count[h.Class]++
		if h.OpenTCP == nil || h.MACs == nil || h.Software == nil {
			t.Errorf("%s: null list in manifest", h.IP)
		}
		if !slices.IsSorted(h.OpenTCP) {
			t.Errorf("%s: open_tcp not sorted: %v", h.IP, h.OpenTCP)
		}
		if want := net.IPv4(127, 77, 200, byte(i+1)).String(); h.IP != want {
			t.Errorf("host %d has ip %s, want %s", i, h.IP, want)
		}
		if h.Class == lab.ClassDead {
			if len(h.OpenTCP) > 0 || h.SNMP {
				t.Errorf("%s: dead address with services", h.IP)
			}
			continue
		}
		if names[h.Name] {
			t.Errorf("duplicate name %s", h.Name)
		}
		names[h.Name] = true
		for _, mac := range h.MACs {
			if other, ok := macs[mac]; ok {
				t.Errorf("MAC %s on %s and %s", mac, other, h.IP)
			}
			macs[mac] = h.IP
		}
		if h.Class == lab.ClassLinux {
			serials[h.Serial] = append(serials[h.Serial], h.IP)
			if h.Credentials.SSH == nil || h.SSHHostKey == "" || len(h.Software) < 20 {
				t.Errorf("%s: linux host without ssh credentials, host key or packages", h.IP)
			}
		}
		if (h.Class == lab.ClassSwitch || h.Class == lab.ClassRouter) && (h.InterfaceCount == 0 || h.Credentials.SNMP == nil) {
			t.Errorf("%s: network gear without interfaces or snmp credentials", h.IP)
		}
	}
	for _, c := range []string{lab.ClassLinux, lab.ClassWindows, lab.ClassWeb, lab.ClassSwitch, lab.ClassRouter, lab.ClassPrinter, lab.ClassLDAP, lab.ClassDead} {
		if count[c] == 0 {
			t.Errorf("no %q host in a 60-host lab: %v", c, count)
		}
	}
	if count[lab.ClassHostile] != 3 {
		t.Errorf("%d hostile hosts", count[lab.ClassHostile])
	}
	if d := count[lab.ClassDead]; d < 3 || d > 20 {
		t.Errorf("%d dead addresses of 60", d)
	}
	if len(serials["To Be Filled By O.E.M."]) < 2 {
		t.Errorf("want at least two hosts sharing the junk DMI serial: %v", serials)
	}
	states := map[string]int{}
	for _, h := range m.Hosts {
		for _, c := range h.Certificates {
			states[c.State]++
		}
	}
	if states["valid"] == 0 || states["expiring"] == 0 || states["expired"] == 0 {
		t.Errorf("certificate states: %v", states)
	}
	if len(m.Neighbours) == 0 {
		t.Fatal("no LLDP neighbours")
	}
	for _, n := range m.Neighbours {
		a, okA := m.Host(n.A)
		b, okB := m.Host(n.B)
		if !okA || !okB || !isGear(a) || !isGear(b) || n.APort == "" || n.BPort == "" {
			t.Errorf("neighbour %+v does not join two network devices", n)
		}
	}
	// a second lab on the same addresses fails cleanly (goleak checks it left nothing behind)
	if _, err := lab.Start(context.Background(), lab.Config{Range: "127.77.200.0/24", Hosts: 60, Seed: 7}); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second lab on the same range: %v", err)
	}
	if m.Directory == nil || len(m.Directory.Users) < 12 || len(m.Directory.Groups) == 0 || len(m.Directory.Servers) == 0 {
		t.Fatalf("directory: %+v", m.Directory)
	}
}

func isGear(h lab.Host) bool { return h.Class == lab.ClassSwitch || h.Class == lab.ClassRouter }

// Every open port of the manifest accepts; the usual ports that are not in it refuse.
func TestPortsMatchManifest(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.201.0/24", 60)
	m := l.Manifest()
	probe := []int{21, 22, 23, 25, 80, 135, 161, 389, 443, 445, 636, 3306, 3389, 5432, 5985, 8080, 8443, 9100}
	type result struct {
		addr string
		open bool
		err  error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	hosts := append(slices.Clone(m.Hosts), lab.Host{IP: "127.77.201.61"}, lab.Host{IP: "127.77.201.200"})
	for _, h := range hosts {
		for _, port := range slices.Concat(probe, h.OpenTCP) {
			open := slices.Contains(h.OpenTCP, port)
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				addr := net.JoinHostPort(h.IP, itoa(port))
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					c.Close()
				}
				mu.Lock()
				results = append(results, result{addr, open, err})
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	for _, r := range results {
		switch {
		case r.open && r.err != nil:
			t.Errorf("%s is open in the manifest but: %v", r.addr, r.err)
		case !r.open && r.err == nil:
			t.Errorf("%s accepts but is not in the manifest", r.addr)
		case !r.open && !errors.Is(r.err, syscall.ECONNREFUSED):
			t.Errorf("%s: want connection refused, got %v", r.addr, r.err)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestStrideSpreadsHosts: with a stride, host i lives at the range's address 1 + i*stride.
func TestStrideSpreadsHosts(t *testing.T) {
	l, err := lab.Start(context.Background(), lab.Config{Range: "127.77.220.0/24", Hosts: 4, Stride: 50, Seed: 7})
	if err != nil {
		t.Skipf("lab cannot start here: %v", err)
	}
	defer l.Close()
	var ips []string
	for _, h := range l.Manifest().Hosts {
		ips = append(ips, h.IP)
	}
	if got, want := strings.Join(ips, " "), "127.77.220.1 127.77.220.51 127.77.220.101 127.77.220.151"; got != want {
		t.Fatalf("hosts at %s, want %s", got, want)
	}
}
