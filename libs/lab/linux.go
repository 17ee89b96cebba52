package lab

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
)

type linuxSpec struct {
	// choices, made first so that lab-wide guarantees can adjust them
	distroIdx, hwIdx int
	web, db          string // "", nginx/apache, postgres/mysql
	https            bool
	r                *rand.Rand

	d        *distro
	hw       *hardware
	kernel   kernel
	serial   string
	uuid     string
	cpuModel string
	cpus     int
	memKiB   int64
	nics     []nic
	pkgs     []pkg
	apps     []*appInstance
	procs    []proc
	disks    []disk
	sshPID   int
	resolved bool // systemd-resolved stub listener (Ubuntu)
	// files are configuration files of the app tiers (apptier.go), by path
	files map[string]string
	// conns are established TCP sockets (apptier.go)
	conns []tcpConn
	// resolver answers getent for the lab's names (app hosts only)
	resolver map[string]string
	chronyd  bool
}

type nic struct {
	name  string
	mac   string
	addrs []netip.Prefix
	up    bool
}

type appInstance struct {
	v     appVariant
	ports []int
	pid   int
	procs []int // worker pids
	title string
}

type proc struct {
	pid        int
	user, comm string
	args       string
}

type disk struct {
	dev, mount, fs string
	kib, usedKiB   int64
}

// chooseLinux draws a linux host's main traits; buildLinux turns them into a spec.
func chooseLinux(h *host, r *rand.Rand) {
	lx := &linuxSpec{r: r}
	lx.distroIdx = pickWeighted(r, distroWeights)
	lx.hwIdx = pickWeighted(r, hardwareWeights)
	switch n := r.IntN(100); {
	case n < 28:
		lx.web = "nginx"
	case n < 42:
		lx.web = "apache"
	}
	switch n := r.IntN(100); {
	case n < 16:
		lx.db = "postgres"
	case n < 27:
		lx.db = "mysql"
	}
	lx.https = r.IntN(100) < 85
	h.lx = lx
}

// applyLinuxGuarantees makes sure a lab with a few linux hosts has both
// package families, a web server, a database, and two hosts sharing the junk
// DMI serial (with different MACs: the CMDB must still tell them apart).
func (p *plan) applyLinuxGuarantees(creds *credentialPools) {
	var lxs []*host
	for _, h := range p.hosts {
		if h.class == ClassLinux {
			lxs = append(lxs, h)
		}
	}
	r := rng(p.cfg.Seed, "linux-guarantees", 0)
	family := func(h *host) string { return distros[h.lx.distroIdx].family }
	has := func(f func(*host) bool) bool { return slices.ContainsFunc(lxs, f) }
	if len(lxs) >= 2 {
		if !has(func(h *host) bool { return family(h) == "deb" }) {
			lxs[0].lx.distroIdx = 0
		}
		if !has(func(h *host) bool { return family(h) == "rpm" }) {
			lxs[len(lxs)-1].lx.distroIdx = 3
		}
	}
	if len(lxs) >= 4 {
		if !has(func(h *host) bool { return h.lx.web != "" }) {
			h := lxs[r.IntN(len(lxs))]
			h.lx.web, h.lx.https = "nginx", true
		}
		if !has(func(h *host) bool { return h.lx.web != "" && h.lx.https }) {
			for _, h := range lxs {
				if h.lx.web != "" {
					h.lx.https = true
					break
				}
			}
		}
		if !has(func(h *host) bool { return h.lx.db != "" }) {
			lxs[r.IntN(len(lxs))].lx.db = "postgres"
		}
	}
	if len(lxs) >= 6 {
		junk := 0
		for _, h := range lxs {
			if hardwares[h.lx.hwIdx].serialKind == "junk" {
				junk++
			}
		}
		for k := 0; junk < 2 && k < len(lxs); k++ {
			h := lxs[(k*7+3)%len(lxs)]
			if hardwares[h.lx.hwIdx].serialKind != "junk" {
				h.lx.hwIdx = 5
				junk++
			}
		}
	}
	counters := map[string]int{}
	for _, h := range lxs {
		p.buildLinux(h, creds, counters)
	}
}

func (p *plan) buildLinux(h *host, creds *credentialPools, counters map[string]int) {
	lx := h.lx
	r := lx.r
	lx.d = distros[lx.distroIdx]
	lx.hw = hardwares[lx.hwIdx]
	d, hw := lx.d, lx.hw
	lx.kernel = pickOne(r, d.kernels)
	lx.serial = serialFor(r, hw.serialKind)
	lx.uuid = fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", r.Uint32(), r.IntN(1<<16), 0x4000|r.IntN(1<<12), 0x8000|r.IntN(1<<14), r.Uint64()&(1<<48-1))
	lx.cpuModel = pickOne(r, hw.cpus)
	lx.cpus = pickOne(r, hw.cores)
	memGiB := int64(pickOne(r, hw.memGiB))
	// the kernel reserves a little: MemTotal is ~2.5% below the installed size
	lx.memKiB = memGiB*1024*1024*975/1000 + int64(r.IntN(4096))

	role := "app"
	switch {
	case lx.web != "" && lx.db != "":
		role = "app"
	case lx.web != "":
		role = "web"
	case lx.db != "":
		role = "db"
	default:
		role = pickOne(r, []string{"app", "util", "build", "mon", "batch", "jump", "log"})
	}
	counters[role]++
	h.name = fmt.Sprintf("%s-%s%02d", sites[p.site].code, role, counters[role])

	// NICs: the first carries the lab address; some hosts have a second on a storage network
	bits := p.prefix.Bits()
	lx.nics = []nic{{name: hw.nicNames[0], mac: macFor(p.cfg.Seed, hw.oui, h.idx, 0), addrs: []netip.Prefix{netip.PrefixFrom(h.ip, bits)}, up: true}}
	if r.IntN(100) < 30 {
		second := netip.AddrFrom4([4]byte{10, 200, byte(h.idx >> 8), byte(h.idx)})
		lx.nics = append(lx.nics, nic{name: hw.nicNames[1], mac: macFor(p.cfg.Seed, hw.oui, h.idx, 1), addrs: []netip.Prefix{netip.PrefixFrom(second, 16)}, up: true})
	}
	if !hw.virtual && r.IntN(100) < 50 {
		// an unplugged onboard port
		lx.nics = append(lx.nics, nic{name: strings.Replace(hw.nicNames[1], "1", "3", 1), mac: macFor(p.cfg.Seed, hw.oui, h.idx, 3)})
	}

	// packages
	pk := slices.Clone(d.base)
	pk = append(pk, pkg{"linux-image-" + lx.kernel.release, strings.Fields(lx.kernel.version)[len(strings.Fields(lx.kernel.version))-2]})
	if d.family == "rpm" {
		pk = slices.DeleteFunc(pk, func(p pkg) bool { return strings.HasPrefix(p.name, "linux-image-") })
		kv := strings.TrimSuffix(lx.kernel.release, ".x86_64")
		pk = slices.DeleteFunc(pk, func(p pkg) bool { return p.name == "kernel" })
		pk = append(pk, pkg{"kernel", kv}, pkg{"kernel-core", kv})
	} else {
		// Debian's linux-image version is the package version in the uname version string
		pk[len(pk)-1].version = debianKernelPkgVersion(lx.kernel)
	}
	for _, e := range extraPkgs {
		v := e.deb
		if d.family == "rpm" {
			v = e.rpm
		}
		if v != "" && r.IntN(100) < 30 {
			if e.name == "open-vm-tools" && hw.hypervisor != "VMware" {
				continue
			}
			pk = append(pk, pkg{e.name, v})
		}
	}

	pid := 700 + r.IntN(300) // above the system daemons of linuxProcs
	next := func() int { pid += 1 + r.IntN(40); return pid }
	addApp := func(v appVariant, ports []int) *appInstance {
		a := &appInstance{v: v, ports: ports, pid: next()}
		if v.worker != "" {
			for range min(lx.cpus, 4) {
				a.procs = append(a.procs, next())
			}
		}
		lx.apps = append(lx.apps, a)
		pk = append(pk, v.pkgs...)
		return a
	}
	lx.sshPID = next()
	var webApp, dbApp *appInstance
	if lx.web != "" {
		v := d.nginx
		if lx.web == "apache" {
			v = d.apache
		}
		ports := []int{80}
		if lx.https {
			ports = append(ports, 443)
		}
		webApp = addApp(v, ports)
		webApp.title = pageTitle(r, p.org)
		if lx.web == "nginx" && r.IntN(3) == 0 {
			webApp.title = "Welcome to nginx!"
		}
		if webApp.title == "IIS Windows Server" || (lx.web == "nginx" && strings.HasPrefix(webApp.title, "Apache2")) {
			webApp.title = p.org + " Intranet"
		}
		if lx.web == "apache" && d.family == "deb" && r.IntN(3) == 0 {
			webApp.title = "Apache2 " + map[string]string{"debian12": "Debian", "ubuntu2204": "Ubuntu", "ubuntu2404": "Ubuntu"}[d.id] + " Default Page: It works"
		}
	}
	if lx.db != "" {
		v := d.postgres
		port := 5432
		if lx.db == "mysql" {
			v, port = d.mysql, 3306
		}
		dbApp = addApp(v, []int{port})
	}
	slices.SortFunc(pk, func(a, b pkg) int { return strings.Compare(a.name, b.name) })
	pk = slices.CompactFunc(pk, func(a, b pkg) bool { return a.name == b.name })
	lx.pkgs = pk

	lx.resolved = strings.HasPrefix(d.id, "ubuntu")
	lx.chronyd = d.family == "rpm"

	// disks
	rootKiB := int64(pickOne(r, []int{20, 32, 50, 100})) * 1024 * 1024
	lx.disks = []disk{{dev: d.rootDev, mount: "/", fs: d.rootFS, kib: rootKiB, usedKiB: rootKiB * int64(15+r.IntN(60)) / 100}}
	if d.family == "rpm" {
		lx.disks = append(lx.disks, disk{dev: "/dev/sda1", mount: "/boot", fs: "xfs", kib: 983040, usedKiB: 301234 + int64(r.IntN(50000))})
	} else if strings.HasPrefix(d.id, "ubuntu") {
		lx.disks = append(lx.disks, disk{dev: "/dev/sda2", mount: "/boot", fs: "ext4", kib: 1992552, usedKiB: 187000 + int64(r.IntN(60000))})
	}
	if dbApp != nil {
		dataKiB := int64(pickOne(r, []int{200, 500, 1000})) * 1024 * 1024
		mount := "/var/lib/postgresql"
		if d.family == "rpm" {
			mount = "/var/lib/pgsql"
		}
		if lx.db == "mysql" {
			mount = "/var/lib/mysql"
		}
		lx.disks = append(lx.disks, disk{dev: "/dev/sdb1", mount: mount, fs: d.rootFS, kib: dataKiB, usedKiB: dataKiB * int64(10+r.IntN(70)) / 100})
	}

	// processes
	lx.procs = linuxProcs(lx, r)

	// SSH
	cred := creds.ssh[pickWeighted(r, creds.sshWeights)]
	h.sshUser, h.sshPass = cred.Username, cred.Password
	h.sshVersion = d.sshVersion
	h.hostKey = hostKeyFor(p.cfg.Seed, h.idx)
	h.services = append(h.services, service{port: 22, kind: svcSSH})
	h.web = map[int]*webSite{}
	for _, a := range lx.apps {
		for _, port := range a.ports {
			switch {
			case port == 80:
				h.services = append(h.services, service{port: port, kind: svcHTTP, app: a})
				h.web[port] = &webSite{port: port, server: a.v.server, status: 200, title: a.title}
			case port == 443:
				h.services = append(h.services, service{port: port, kind: svcHTTPS, app: a})
				h.web[port] = &webSite{port: port, tls: true, server: a.v.server, status: 200, title: a.title}
			case port == 5432:
				h.services = append(h.services, service{port: port, kind: svcPostgres, app: a})
			case port == 3306:
				h.services = append(h.services, service{port: port, kind: svcMySQL, app: a})
			}
		}
	}

	// manifest
	m := &h.m
	m.Vendor, m.Model, m.Virtual = hw.vendor, hw.product, hw.virtual
	m.Serial = lx.serial
	m.OS, m.OSVersion, m.Kernel = d.name, d.versionID, lx.kernel.release
	m.CPUModel, m.CPUs, m.MemoryBytes = lx.cpuModel, lx.cpus, lx.memKiB*1024
	for _, n := range lx.nics {
		m.MACs = append(m.MACs, n.mac)
		ifc := Interface{Name: n.name, MAC: n.mac, Up: n.up}
		for _, a := range n.addrs {
			ifc.IPv4 = append(ifc.IPv4, a.String())
		}
		m.Interfaces = append(m.Interfaces, ifc)
	}
	for _, p := range lx.pkgs {
		m.Software = append(m.Software, Software{p.name, p.version})
	}
	for _, a := range lx.apps {
		m.Applications = append(m.Applications, Application{Name: a.v.name, Version: a.v.version, Class: a.v.class, Process: a.v.process, Ports: a.ports})
	}
	for _, port := range []int{80, 443} {
		if w := h.web[port]; w != nil {
			m.Web = append(m.Web, WebService{Port: port, TLS: w.tls, Server: w.server, Status: w.status, Title: w.title})
		}
	}
	m.Credentials.SSH = &SSHCredential{Username: cred.Username, Password: cred.Password}
}

func debianKernelPkgVersion(k kernel) string {
	// "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)" → "6.1.76-1"
	f := strings.Fields(k.version)
	for i, w := range f {
		if w == "Debian" && i+1 < len(f) {
			return f[i+1]
		}
	}
	// Ubuntu: 5.15.0-105-generic → 5.15.0-105.115
	rel := strings.TrimSuffix(k.release, "-generic")
	num := strings.TrimPrefix(strings.Fields(k.version)[0], "#")
	num = strings.TrimSuffix(num, "-Ubuntu")
	return rel + "." + num
}

func linuxProcs(lx *linuxSpec, r *rand.Rand) []proc {
	ps := []proc{
		{1, "root", "systemd", "/sbin/init"},
		{2, "root", "kthreadd", "[kthreadd]"},
		{3, "root", "rcu_gp", "[rcu_gp]"},
		{12, "root", "ksoftirqd/0", "[ksoftirqd/0]"},
		{98 + r.IntN(100), "root", "kworker/0:1-events", "[kworker/0:1-events]"},
		{300 + r.IntN(20), "root", "systemd-journal", "/lib/systemd/systemd-journald"},
		{330 + r.IntN(20), "root", "systemd-udevd", "/lib/systemd/systemd-udevd"},
	}
	pid := 360 + r.IntN(30)
	add := func(user, comm, args string) { pid += 1 + r.IntN(25); ps = append(ps, proc{pid, user, comm, args}) }
	if lx.resolved {
		add("systemd-resolve", "systemd-resolve", "/lib/systemd/systemd-resolved")
	}
	if lx.chronyd {
		add("chrony", "chronyd", "/usr/sbin/chronyd -F 2")
	} else if lx.d.id == "debian12" {
		add("systemd-timesync", "systemd-timesyn", "/lib/systemd/systemd-timesyncd")
	}
	add("messagebus", "dbus-daemon", "@dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only")
	add("root", "cron", map[bool]string{true: "/usr/sbin/crond -n", false: "/usr/sbin/cron -f"}[lx.d.family == "rpm"])
	if lx.d.family == "rpm" {
		ps[len(ps)-1].comm = "crond"
		add("root", "firewalld", "/usr/bin/python3 -s /usr/sbin/firewalld --nofork --nopid")
	}
	add("syslog", "rsyslogd", "/usr/sbin/rsyslogd -n -iNONE")
	if lx.d.family == "rpm" {
		ps[len(ps)-1].user = "root"
	}
	if lx.hw.hypervisor == "VMware" {
		add("root", "vmtoolsd", "/usr/bin/vmtoolsd")
	}
	add("root", "systemd-logind", "/lib/systemd/systemd-logind")
	ps = append(ps, proc{lx.sshPID, "root", "sshd", sshdArgs(lx.d)})
	for _, a := range lx.apps {
		comm := a.v.process
		ps = append(ps, proc{a.pid, a.v.user, comm, a.v.args})
		for _, w := range a.procs {
			user := "www-data"
			if lx.d.family == "rpm" {
				user = map[string]string{"nginx": "nginx", "httpd": "apache"}[a.v.worker]
			}
			ps = append(ps, proc{w, user, a.v.worker, a.v.workArgs})
		}
		if a.v.name == "postgresql" {
			prefix := "postgres: "
			if lx.d.family == "deb" {
				prefix += lx.d.versionMajorPG() + "/main: "
			}
			for k, c := range []string{"checkpointer", "background writer", "walwriter", "autovacuum launcher", "logical replication launcher"} {
				ps = append(ps, proc{a.pid + 1 + k, "postgres", "postgres", prefix + c + " "})
			}
		}
	}
	add("root", "agetty", "/sbin/agetty -o -p -- \\u --noclear - linux")
	slices.SortFunc(ps, func(a, b proc) int { return a.pid - b.pid })
	ps = slices.CompactFunc(ps, func(a, b proc) bool { return a.pid == b.pid })
	return ps
}

func (d *distro) versionMajorPG() string {
	return strings.Split(d.postgres.version, ".")[0]
}

func sshdArgs(d *distro) string {
	switch {
	case d.family == "rpm":
		return "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
	case d.id == "ubuntu2404":
		return "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
	default:
		return "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"
	}
}
