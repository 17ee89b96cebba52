package tcpscan

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	got, err := ParsePorts([]string{"22", "80-82", "top100", "22"})
	if err != nil || len(got) != 101 || got[0] != 7 {
		t.Errorf("ParsePorts: %d ports, %v", len(got), err)
	}
	if len(top100) != 100 {
		t.Errorf("top100 has %d ports", len(top100))
	}
	if all, _ := ParsePorts([]string{"-"}); len(all) != 65535 {
		t.Errorf("all ports: %d", len(all))
	}
	for _, bad := range []string{"70000", "0", "80-20", "http", "1-", "-5"} {
		if _, err := ParsePorts([]string{bad}); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParsePorts(%q): %v", bad, err)
		}
	}
	if s := compactPorts([]uint16{1, 2, 3, 5, 7, 8}); s != "1-3,5,7-8" {
		t.Errorf("compactPorts: %s", s)
	}
}

func TestParseTargets(t *testing.T) {
	got, err := ParseTargets([]string{"10.0.0.0/30", "10.0.0.2-5", "10.0.0.9", "::1"}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.0.0.0 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.9 ::1]" {
		t.Errorf("ParseTargets: %v", got)
	}
	if _, err := ParseTargets([]string{"10.0.0.0/8"}, 65536); err == nil {
		t.Error("a /8 passed a limit of 65536")
	}
	for _, bad := range []string{"10.0.0.300", "10.0.0.5-2", "host.example", "10.0.0.1-::2", "::/0"} {
		if _, err := ParseTargets([]string{bad}, 1<<20); err == nil {
			t.Errorf("ParseTargets(%q) accepted", bad)
		}
	}
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.4")}
	if s := fmt.Sprint(compactAddrs(addrs)); s != "[10.0.0.1-10.0.0.2 10.0.0.4]" {
		t.Errorf("compactAddrs: %s", s)
	}
}

// FuzzParsePorts: port specs never panic and give sorted, unique, valid ports.
func FuzzParsePorts(f *testing.F) {
	f.Add("22,80-90,top100")
	f.Fuzz(func(t *testing.T, spec string) {
		ports, err := ParsePorts(strings.Split(spec, ","))
		if err != nil {
			return
		}
		for i, p := range ports {
			if p == 0 || (i > 0 && ports[i-1] >= p) {
				t.Fatalf("ParsePorts(%q): %v", spec, ports)
			}
		}
	})
}

// FuzzParseTargets: target specs never panic, respect the limit and give sorted unique
// addresses.
func FuzzParseTargets(f *testing.F) {
	f.Add("10.0.0.0/24,10.0.1.1-20,fe80::1")
	f.Fuzz(func(t *testing.T, spec string) {
		addrs, err := ParseTargets(strings.Split(spec, ","), 4096)
		if err != nil {
			return
		}
		if len(addrs) > 4096 {
			t.Fatalf("%d addresses beyond the limit", len(addrs))
		}
		for i := 1; i < len(addrs); i++ {
			if addrs[i-1].Compare(addrs[i]) >= 0 {
				t.Fatalf("not sorted/unique: %v", addrs)
			}
		}
	})
}
