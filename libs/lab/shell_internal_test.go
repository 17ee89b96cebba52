package lab

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests run the command table of planned hosts without any network.

func testPlan(t *testing.T) *plan {
	t.Helper()
	cfg := Config{Range: "127.77.250.0/24", Hosts: 60, Seed: 7}
	p, err := newPlan(cfg, time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func run(h *host, user, cmd string) (stdout, stderr string, status int) {
	var o, e strings.Builder
	env := &shellEnv{ctx: context.Background(), h: h, user: user, stdout: &o, stderr: &e}
	status = env.run(cmd)
	return o.String(), e.String(), status
}

func linuxHosts(p *plan, family string) []*host {
	var out []*host
	for _, h := range p.hosts {
		if h.lx != nil && (family == "" || h.lx.d.family == family) {
			out = append(out, h)
		}
	}
	return out
}

func TestShellLikeBash(t *testing.T) {
	p := testPlan(t)
	deb, rpm := linuxHosts(p, "deb"), linuxHosts(p, "rpm")
	if len(deb) == 0 || len(rpm) == 0 {
		t.Fatalf("want both package families, got %d deb and %d rpm hosts", len(deb), len(rpm))
	}
	h := deb[0]
	cases := []struct {
		cmd          string
		out, errPart string
		status       int
	}{
		{cmd: "hostname", out: h.name + "\n"},
		{cmd: "hostname -f", out: h.fqdn + "\n"},
		{cmd: "cat /sys/class/dmi/id/product_serial", out: h.lx.serial + "\n"},
		{cmd: "cat /sys/class/dmi/id/sys_vendor", out: h.lx.hw.vendor + "\n"},
		{cmd: "cat /nope", errPart: "cat: /nope: No such file or directory", status: 1},
		{cmd: "frobnicate --all", errPart: "bash: frobnicate: command not found", status: 127},
		{cmd: "rpm -qa", errPart: "bash: rpm: command not found", status: 127},
		{cmd: "echo a; echo b", out: "a\nb\n"},
		{cmd: "false && echo no", status: 1},
		{cmd: "false || echo yes", out: "yes\n"},
		{cmd: "seq 1 100000 | tail -n 1", out: "100000\n"},
		{cmd: "seq 3 | wc -l", out: "3\n"},
		{cmd: "yes | head -n 2", out: "y\ny\n"},
		{cmd: "cat /etc/os-release | grep VERSION_ID", out: "VERSION_ID=\"" + h.lx.d.versionID + "\"\n"},
		{cmd: "LANG=C sudo -n cat /sys/class/dmi/id/product_name 2>/dev/null", out: h.lx.hw.product + "\n"},
		{cmd: "sh -c 'echo \"quoted  twice\"'", out: "quoted  twice\n"},
		{cmd: "exit 3", status: 3},
		{cmd: "nosuch 2>&1", out: "bash: nosuch: command not found\n", status: 127},
		{cmd: "echo 'unterminated", errPart: "unexpected EOF", status: 2},
	}
	for _, c := range cases {
		out, errOut, status := run(h, "svc-discovery", c.cmd)
		if status != c.status || (c.out != "" && out != c.out) || (c.errPart != "" && !strings.Contains(errOut, c.errPart)) {
			t.Errorf("%q: got status %d, stdout %q, stderr %q; want status %d, stdout %q, stderr containing %q",
				c.cmd, status, out, errOut, c.status, c.out, c.errPart)
		}
	}
}

func TestPackageListsMatchManifest(t *testing.T) {
	p := testPlan(t)
	for _, h := range linuxHosts(p, "") {
		cmd := `dpkg-query -W -f='${Package} ${Version}\n'`
		if h.lx.d.family == "rpm" {
			cmd = `rpm -qa --qf '%{NAME} %{VERSION}-%{RELEASE}\n'`
		}
		out, errOut, status := run(h, "root", cmd)
		if status != 0 {
			t.Fatalf("%s %s: %q exit %d: %s", h.ip, h.lx.d.id, cmd, status, errOut)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != len(h.m.Software) {
			t.Fatalf("%s: %d packages listed, manifest has %d", h.ip, len(lines), len(h.m.Software))
		}
		for i, l := range lines {
			if want := h.m.Software[i].Name + " " + h.m.Software[i].Version; l != want {
				t.Errorf("%s: package line %d = %q, manifest %q", h.ip, i, l, want)
			}
		}
	}
}

func TestLinuxOutputsCarryTheTruth(t *testing.T) {
	p := testPlan(t)
	for _, h := range linuxHosts(p, "") {
		out, _, _ := run(h, "root", "uname -a")
		if !strings.HasPrefix(out, "Linux "+h.name+" "+h.lx.kernel.release+" ") || !strings.HasSuffix(out, " GNU/Linux\n") {
			t.Errorf("%s: uname -a = %q", h.ip, out)
		}
		links, _, _ := run(h, "root", "ip -o link")
		for _, mac := range h.m.MACs {
			if !strings.Contains(links, "link/ether "+mac+" ") {
				t.Errorf("%s: ip -o link lacks %s:\n%s", h.ip, mac, links)
			}
		}
		addrs, _, _ := run(h, "root", "ip -o addr")
		if !strings.Contains(addrs, "inet "+h.ip.String()+"/24 ") {
			t.Errorf("%s: ip -o addr lacks the host address:\n%s", h.ip, addrs)
		}
		ss, _, _ := run(h, "root", "ss -tlnp")
		for _, port := range h.m.OpenTCP {
			if !strings.Contains(ss, ":"+itoa(port)+" ") {
				t.Errorf("%s: ss -tlnp lacks port %d:\n%s", h.ip, port, ss)
			}
		}
		for _, a := range h.m.Applications {
			if !strings.Contains(ss, `(("`+a.Process+`",`) {
				t.Errorf("%s: ss -tlnp lacks process %s:\n%s", h.ip, a.Process, ss)
			}
			ps, _, _ := run(h, "root", "ps -eo pid,comm,args")
			if !strings.Contains(ps, " "+a.Process+" ") {
				t.Errorf("%s: ps lacks %s", h.ip, a.Process)
			}
		}
		mem, _, _ := run(h, "root", "free -b")
		if !strings.Contains(mem, itoa64(h.m.MemoryBytes)) {
			t.Errorf("%s: free -b does not show %d:\n%s", h.ip, h.m.MemoryBytes, mem)
		}
		cpu, _, _ := run(h, "root", "lscpu")
		if !strings.Contains(cpu, h.m.CPUModel) {
			t.Errorf("%s: lscpu lacks %s", h.ip, h.m.CPUModel)
		}
	}
}

func itoa(n int) string     { return strconv.Itoa(n) }
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
