package lab

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Classes of lab hosts (the CMDB class names).
const (
	ClassLinux   = "linux_server"
	ClassWindows = "windows_server"
	ClassWeb     = "web_server"
	ClassSwitch  = "ip_switch"
	ClassRouter  = "ip_router"
	ClassPrinter = "printer"
	ClassLDAP    = "ldap_directory"
	ClassDead    = ""
	// ClassHostile is the class of hostile hosts (Config.Hostile).
	ClassHostile = "hostile"
)

// Hostile modes.
const (
	HostileStall         = "stall"
	HostileWrongProtocol = "wrong_protocol"
	HostileStream        = "stream"
)

// HostilePorts are the TCP ports every hostile host listens on (UDP 161 too).
var HostilePorts = []int{22, 80, 389, 443, 3306, 5432}

// classWeights is the mix of the simulated addresses (percent-ish); LDAP
// directories are placed separately (one per 500 addresses).
var classWeights = []struct {
	class  string
	weight int
}{
	{ClassDead, 15}, {ClassLinux, 34}, {ClassWindows, 13}, {ClassWeb, 11},
	{ClassSwitch, 12}, {ClassRouter, 5}, {ClassPrinter, 7},
}

// minClassCount is what every lab of at least minGuaranteedHosts hosts has,
// so that tests can rely on finding each profile.
var minClassCount = []struct {
	class string
	n     int
}{
	{ClassLDAP, 1}, {ClassLinux, 4}, {ClassSwitch, 2}, {ClassRouter, 1}, {ClassWeb, 1},
	{ClassWindows, 1}, {ClassPrinter, 1}, {ClassDead, 1},
}

const minGuaranteedHosts = 16

// service kinds a TCP port can run
const (
	svcSSH       = "ssh"
	svcHTTP      = "http"
	svcHTTPS     = "https"
	svcMySQL     = "mysql"
	svcPostgres  = "postgres"
	svcIdle      = "idle"      // msrpc, smb: accept and wait
	svcRDP       = "rdp"       // answers the X.224 connection request
	svcJetDirect = "jetdirect" // reads the job, never answers
	svcTelnet    = "telnet"
	svcLDAP      = "ldap"
	svcLDAPS     = "ldaps"
	svcHostile   = "hostile"
	svcWinRM     = "winrm" // WS-Management over HTTP (5985): winrm.go
)

type service struct {
	port int
	kind string
	app  *appInstance // database/web application behind the port (linux)
}

// host is the plan of one address plus the state its servers need.
type host struct {
	idx   int
	ip    netip.Addr
	class string
	name  string
	fqdn  string
	m     Host // manifest entry

	services []service
	lx       *linuxSpec
	gear     *gearSpec
	web      map[int]*webSite // port → site
	tls      *tlsIdentity
	hostile  string
	win      *windowsSpec

	sshVersion string
	hostKey    ssh.Signer
	sshUser    string // empty: no login succeeds (network gear)
	sshPass    string
	sshOnce    sync.Once
	sshCfg     *ssh.ServerConfig

	// live guards what a running lab may change on the host (MoveDatabase, SetExecDelay):
	// commands run under its read lock, so one never sees half a change.
	live      sync.RWMutex
	execDelay time.Duration
}

// plan is the whole simulated network, derived from the config only.
type plan struct {
	cfg        Config
	prefix     netip.Prefix
	ref        time.Time
	org        string
	domain     string
	site       int
	hosts      []*host
	neighbours []Neighbour
	dir        *directory
	// appServices are the multi-tier application services (apptier.go)
	appServices []AppService
	winCreds    *winCredentialPool
	// tiers say how each app service is wired, for MoveDatabase (same order as appServices)
	tiers []appTier
}

// rng returns a generator for one purpose, independent of every other, so
// that adding hosts or features does not reshuffle what exists.
func rng(seed int64, label string, idx int) *rand.Rand {
	h := sha256.Sum256(fmt.Appendf(nil, "outpost-lab/%d/%s/%d", seed, label, idx))
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16])))
}

// secretBytes derives key material for one purpose.
func secretBytes(seed int64, label string, idx int) [32]byte {
	return sha256.Sum256(fmt.Appendf(nil, "outpost-lab-key/%d/%s/%d", seed, label, idx))
}

func pickWeighted(r *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := r.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

func pickOne[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

const pwAlphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

func password(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = pwAlphabet[r.IntN(len(pwAlphabet))]
	}
	// one symbol that survives shells, JSON and URLs unquoted
	b[r.IntN(n-1)+1] = "-_.!@%"[r.IntN(6)]
	return string(b)
}

// macFor gives every (host, port) a distinct MAC: multiplying by an odd
// constant modulo 2^24 is a bijection, so no two lab NICs collide.
func macFor(seed int64, oui string, idx, port int) string {
	v := uint32(idx*64+port)*0x9E3779 + uint32(seed)*0x10001
	v &= 0xFFFFFF
	return fmt.Sprintf("%s:%02x:%02x:%02x", oui, byte(v>>16), byte(v>>8), byte(v))
}

func macBytes(mac string) []byte {
	out := make([]byte, 0, 6)
	for _, p := range strings.Split(mac, ":") {
		var b byte
		fmt.Sscanf(p, "%02x", &b)
		out = append(out, b)
	}
	return out
}

func addrAt(p netip.Prefix, i int) netip.Addr {
	a := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) + uint32(i)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// newPlan derives the lab from the configuration. It does no I/O.
func newPlan(cfg Config, now time.Time) (*plan, error) {
	p := &plan{cfg: cfg, prefix: cfg.prefix(), ref: now.UTC().Truncate(24 * time.Hour)}
	lr := rng(cfg.Seed, "lab", 0)
	org := organisations[lr.IntN(len(organisations))]
	p.org, p.domain = org.name, org.domain
	p.site = lr.IntN(len(sites))
	creds := newCredentialPools(cfg.Seed, p.org)
	p.winCreds = newWinCredentialPool(cfg.Seed)

	classes := assignClasses(cfg.Seed, cfg.Hosts)
	if cfg.Hostile {
		for range HostileHosts {
			classes = append(classes, ClassHostile)
		}
	}
	counters := map[string]int{}
	site := sites[p.site]
	for i, class := range classes {
		h := &host{idx: i, ip: addrAt(p.prefix, 1+i*cfg.stride()), class: class}
		p.hosts = append(p.hosts, h)
		h.m = Host{IP: h.ip.String(), Class: class, MACs: []string{}, OpenTCP: []int{}, Software: []Software{}}
		if class == ClassHostile {
			h.m.Class = ClassHostile
			h.m.Hostile = true
			h.hostile = []string{HostileStall, HostileWrongProtocol, HostileStream}[i-cfg.Hosts]
			h.m.HostileMode = h.hostile
			h.name = "hostile-" + strings.ReplaceAll(h.hostile, "_", "-")
			for _, port := range HostilePorts {
				h.services = append(h.services, service{port: port, kind: svcHostile})
			}
			h.m.SNMP = true
			continue
		}
		r := rng(cfg.Seed, "host", i)
		switch class {
		case ClassDead:
			continue
		case ClassLinux:
			chooseLinux(h, r)
		case ClassWindows:
			p.planWindows(h, r, counters)
		case ClassWeb:
			p.planWebAppliance(h, r, counters)
		case ClassSwitch, ClassRouter, ClassPrinter:
			p.planGear(h, r, creds, counters)
		case ClassLDAP:
			counters["ldap"]++
			h.name = fmt.Sprintf("%s-ldap%02d", site.code, counters["ldap"])
			h.services = []service{{port: 389, kind: svcLDAP}, {port: 636, kind: svcLDAPS}}
			h.m.OS, h.m.OSVersion = "389 Directory Server", "2.4.5"
			h.m.Software = []Software{{"389-ds-base", "2.4.5-1"}}
			h.m.Vendor, h.m.Model, h.m.Virtual = "VMware, Inc.", "VMware7,1", true
			h.m.Serial = serialFor(r, "vmware")
			h.m.MACs = []string{macFor(cfg.Seed, "00:50:56", i, 0)}
		}
	}
	p.applyLinuxGuarantees(creds)
	p.applyWindowsGuarantees()
	p.planTopology()
	p.dir = newDirectory(cfg.Seed, cfg.Hosts, p.domain, p.org, creds.ldap)
	for _, h := range p.hosts {
		if h.class == ClassLDAP {
			p.dir.servers = append(p.dir.servers, h.ip.String())
			h.m.Credentials.LDAP = &LDAPCredential{BindDN: p.dir.bindDN, Password: p.dir.bindPassword}
		}
	}
	for _, h := range p.hosts {
		if h.name != "" {
			h.fqdn = strings.ToLower(h.name) + "." + p.domain
			h.m.Name, h.m.FQDN = h.name, h.fqdn
		}
		if h.class == ClassHostile {
			h.m.FQDN = ""
		}
	}
	p.planAppServices()
	if err := p.planTLS(); err != nil {
		return nil, err
	}
	for _, h := range p.hosts {
		for _, s := range h.services {
			h.m.OpenTCP = append(h.m.OpenTCP, s.port)
		}
		slices.Sort(h.m.OpenTCP)
		h.m.OpenTCP = slices.Compact(h.m.OpenTCP)
		if h.hostKey != nil {
			h.m.SSHHostKey = ssh.FingerprintSHA256(h.hostKey.PublicKey())
			h.m.SSHVersion = h.sshVersion
		}
	}
	return p, nil
}

// assignClasses draws the class of every simulated address and then makes
// sure a lab of useful size has every profile at least minClassCount times.
func assignClasses(seed int64, n int) []string {
	r := rng(seed, "classes", 0)
	weights := make([]int, len(classWeights))
	for i, cw := range classWeights {
		weights[i] = cw.weight
	}
	classes := make([]string, n)
	for i := range classes {
		classes[i] = classWeights[pickWeighted(r, weights)].class
	}
	// directory servers: one per 500 addresses, at random places
	for range 1 + n/500 {
		if n >= 4 {
			classes[r.IntN(n)] = ClassLDAP
		}
	}
	if n < minGuaranteedHosts {
		return classes
	}
	count := map[string]int{}
	for _, c := range classes {
		count[c]++
	}
	need := map[string]int{}
	for _, mc := range minClassCount {
		need[mc.class] = mc.n
	}
	for _, mc := range minClassCount {
		for count[mc.class] < mc.n {
			// take an address from the class with the largest surplus
			donor, best := "", 0
			for _, cw := range classWeights {
				if s := count[cw.class] - need[cw.class]; s > best {
					donor, best = cw.class, s
				}
			}
			start := r.IntN(n)
			for k := range n {
				i := (start + k) % n
				if classes[i] == donor {
					classes[i] = mc.class
					count[donor]--
					count[mc.class]++
					break
				}
			}
		}
	}
	return classes
}

// credentialPools are shared across hosts, like a real estate: most hosts
// take the first credential, some another — credential affinity has work to do.
type credentialPools struct {
	ssh         []SSHCredential
	sshWeights  []int
	communities []string
	commWeights []int
	v3User      string
	v3Auth      string
	v3Priv      string
	ldap        string
}

func newCredentialPools(seed int64, org string) *credentialPools {
	r := rng(seed, "credentials", 0)
	short := strings.ToLower(strings.Fields(org)[0])
	return &credentialPools{
		ssh: []SSHCredential{
			{"svc-discovery", password(r, 16)},
			{"root", password(r, 14)},
			{pickOne(r, []string{"ansible", "admin", "ops"}), password(r, 12)},
		},
		sshWeights:  []int{60, 25, 15},
		communities: []string{short + "-ro-" + password(r, 6), "n0c" + password(r, 5)},
		commWeights: []int{80, 20},
		v3User:      "outpost",
		v3Auth:      password(r, 14),
		v3Priv:      password(r, 14),
		ldap:        password(r, 16),
	}
}

// hostKey derives the host's ed25519 SSH key from the seed.
func hostKeyFor(seed int64, idx int) ssh.Signer {
	k := secretBytes(seed, "ssh-host-key", idx)
	s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(k[:]))
	if err != nil {
		panic(err) // cannot happen for a well-formed ed25519 key
	}
	return s
}

func (p *plan) planWindows(h *host, r *rand.Rand, counters map[string]int) {
	roles := []string{"FS", "SQL", "APP", "DC", "RDS", "PRT", "WSUS"}
	role := pickOne(r, roles)
	counters["win-"+role]++
	h.name = fmt.Sprintf("%s-%s%02d", strings.ToUpper(sites[p.site].code), role, counters["win-"+role])
	wv := pickOne(r, windowsVersions)
	h.m.OS, h.m.OSVersion = wv.os, wv.version
	hw := pickOne(r, []*hardware{hardwares[0], hardwares[1], hardwares[2]})
	h.m.Vendor, h.m.Model, h.m.Virtual = hw.vendor, hw.product, hw.virtual
	if hw.virtual {
		h.m.Vendor, h.m.Model = "VMware, Inc.", "VMware7,1"
	}
	h.m.Serial = serialFor(r, hw.serialKind)
	h.m.MACs = []string{macFor(p.cfg.Seed, hw.oui, h.idx, 0)}
	h.services = []service{{port: 135, kind: svcIdle}, {port: 445, kind: svcIdle}, {port: 3389, kind: svcRDP}, {port: 5985, kind: svcWinRM}}
	h.web = map[int]*webSite{5985: {port: 5985, server: "Microsoft-HTTPAPI/2.0", status: 404, winrm: true}}
	h.m.Web = []WebService{{Port: 5985, Server: "Microsoft-HTTPAPI/2.0", Status: 404, Title: "Not Found"}}
	p.planWindowsDetail(h, h.m.Virtual, p.winCreds)
}

func (p *plan) planWebAppliance(h *host, r *rand.Rand, counters map[string]int) {
	counters["www"]++
	h.name = fmt.Sprintf("%s-www%02d", sites[p.site].code, counters["www"])
	wa := pickOne(r, webAppliances)
	h.m.OS = wa.os
	h.m.Software = []Software{{wa.name, wa.version}}
	title := pageTitle(r, p.org)
	if wa.name == "iis" {
		title = "IIS Windows Server"
	} else if title == "IIS Windows Server" {
		title = p.org + " Intranet"
	}
	ports := pickOne(r, [][]int{{80, 443}, {80, 443}, {80, 443}, {80, 8443}, {443}, {80, 443, 8443}})
	h.web = map[int]*webSite{}
	h.m.Applications = []Application{{Name: wa.name, Version: wa.version, Class: ClassWeb, Process: wa.name, Ports: ports}}
	for _, port := range ports {
		tls := port != 80
		kind := svcHTTP
		if tls {
			kind = svcHTTPS
		}
		h.services = append(h.services, service{port: port, kind: kind})
		h.web[port] = &webSite{port: port, tls: tls, server: wa.server, status: 200, title: title, iis: wa.name == "iis"}
		h.m.Web = append(h.m.Web, WebService{Port: port, TLS: tls, Server: wa.server, Status: 200, Title: title})
	}
	h.m.MACs = []string{macFor(p.cfg.Seed, "00:50:56", h.idx, 0)}
	h.m.Virtual = true
	h.m.Vendor, h.m.Model = "VMware, Inc.", "VMware7,1"
	h.m.Serial = serialFor(r, "vmware")
}

// serialFor makes a serial number in the format the vendor uses.
func serialFor(r *rand.Rand, kind string) string {
	const up = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
	const digits = "0123456789"
	const hexd = "0123456789abcdef"
	s := func(alpha string, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alpha[r.IntN(len(alpha))]
		}
		return string(b)
	}
	switch kind {
	case "dell":
		return s(up, 7)
	case "hpe":
		return "CZJ" + s(digits, 4) + s(up, 3)
	case "lenovo":
		return "J30" + s(up, 5)
	case "vmware":
		b := make([]string, 16)
		for i := range b {
			b[i] = s(hexd, 2)
		}
		return "VMware-" + strings.Join(b[:8], " ") + "-" + strings.Join(b[8:], " ")
	case "qemu":
		return ""
	case "junk":
		return junkSerial
	case "cisco":
		return pickOne(r, []string{"FOC", "FCW", "FDO", "FJC"}) + s(digits, 4) + s(up, 4)
	case "aruba":
		return "SG" + s(digits, 2) + s(up, 2) + s(digits, 4)
	case "juniper":
		return pickOne(r, []string{"JW", "CW", "HV"}) + s(digits, 10)
	case "mikrotik":
		return "HE" + s(up, 8)
	case "hp":
		return pickOne(r, []string{"PHB", "VNB", "CNB"}) + s(up, 7)
	case "brother":
		return "E7" + s(digits, 4) + "A" + s(digits, 1) + "N" + s(digits, 6)
	case "lexmark":
		return "50" + s(digits, 3) + s(up, 8)
	}
	return s(up, 10)
}

// pageTitle picks the title of a site; some name the company.
func pageTitle(r *rand.Rand, org string) string {
	t := pickOne(r, pageTitles)
	if strings.Contains(t, "%s") {
		return fmt.Sprintf(t, org)
	}
	return t
}
