package lab

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"
)

// WinRM modes of a windows_server (Host.WinRM).
const (
	// WinRMOn: WinRM over HTTP 5985 (AllowUnencrypted, as a WS-Management client without
	// message encryption needs), NTLM with the manifest's winrm credential.
	WinRMOn = "ntlm"
	// WinRMRefuses: 5985 answers, but refuses every credential of the estate (401): a
	// server whose local administrator password nobody gave discovery.
	WinRMRefuses = "refuses_credentials"
	// WinRMOff: the WinRM service is stopped: 5985 is closed.
	WinRMOff = "disabled"
)

// Disk is a fixed logical disk of a Windows host (Win32_LogicalDisk, DriveType 3).
type Disk struct {
	DeviceID   string `json:"device_id"`
	VolumeName string `json:"volume_name"`
	FileSystem string `json:"file_system"`
	SizeBytes  int64  `json:"size_bytes"`
	FreeBytes  int64  `json:"free_bytes"`
}

// WinRMCredential is a local Windows account that may use WinRM (NTLM).
type WinRMCredential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// windowsSpec is what a Windows host answers over WinRM: its CIM objects, registry and
// services, as PowerShell prints them.
type windowsSpec struct {
	mode      string
	basic     bool // Basic auth enabled too (winrm/config/service/auth Basic=true)
	user      string
	password  string
	netbios   string
	workgroup string
	caption   string
	version   string
	build     string
	install   time.Time
	boot      time.Time
	biosVer   string
	cpuModel  string
	sockets   int
	cores     int // per socket
	logical   int // per socket
	mhz       int
	memBytes  int64
	disks     []Disk
	mac       string // upper case, colons (Win32_NetworkAdapterConfiguration.MACAddress)
	nicDescr  string
	addr      netip.Prefix
	software  []winSoftware
	services  []winService
	listen    []winListener
}

type winSoftware struct{ name, version, publisher, installDate string }

type winService struct {
	name, display string
	running       bool
	pid           int
	ports         []int
}

type winListener struct {
	addr string
	port int
	pid  int
}

var winSoftwarePool = []winSoftware{
	{"Microsoft Edge", "131.0.2903.70", "Microsoft Corporation", "20241205"},
	{"7-Zip 23.01 (x64)", "23.01", "Igor Pavlov", ""},
	{"Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team", ""},
	{"Microsoft Visual C++ 2015-2022 Redistributable (x64) - 14.38.33135", "14.38.33135.0", "Microsoft Corporation", "20240312"},
	{"Mozilla Firefox (x64 en-US)", "128.5.1", "Mozilla", ""},
	{"Microsoft SQL Server 2019 (64-bit)", "15.0.4385.2", "Microsoft Corporation", "20231018"},
	{"Zabbix Agent 2 (64-bit)", "6.4.12.2400", "Zabbix SIA", "20240221"},
	{"Veeam Agent for Microsoft Windows", "6.1.2.134", "Veeam Software Group GmbH", "20240607"},
	{"CrowdStrike Windows Sensor", "7.16.18613.0", "CrowdStrike, Inc.", "20240830"},
	{"PowerShell 7-x64", "7.4.6.0", "Microsoft Corporation", "20241112"},
	{"Git", "2.47.1", "The Git Development Community", "20241126"},
	{"VMware Tools", "12.4.5.23787635", "VMware, Inc.", "20240614"},
}

var winBaseServices = []winService{
	{name: "Dnscache", display: "DNS Client", running: true},
	{name: "EventLog", display: "Windows Event Log", running: true},
	{name: "LanmanServer", display: "Server", running: true, ports: []int{445}},
	{name: "LanmanWorkstation", display: "Workstation", running: true},
	{name: "RpcSs", display: "Remote Procedure Call (RPC)", running: true, ports: []int{135}},
	{name: "Schedule", display: "Task Scheduler", running: true},
	{name: "TermService", display: "Remote Desktop Services", running: true, ports: []int{3389}},
	{name: "W32Time", display: "Windows Time", running: true},
	{name: "WinRM", display: "Windows Remote Management (WS-Management)", running: true, ports: []int{5985}},
	{name: "wuauserv", display: "Windows Update", running: false},
	{name: "Spooler", display: "Print Spooler", running: false},
}

// planWindowsDetail draws what WinRM shows of a Windows host, from its own generator so
// that the traits drawn before it (name, OS, hardware, serial) stay what they were.
func (p *plan) planWindowsDetail(h *host, hwVirtual bool, creds *winCredentialPool) {
	r := rng(p.cfg.Seed, "windows", h.idx)
	w := &windowsSpec{mode: WinRMOn, netbios: strings.ToUpper(h.name), workgroup: "WORKGROUP", caption: h.m.OS, version: h.m.OSVersion}
	w.build = w.version[strings.LastIndexByte(w.version, '.')+1:]
	c := creds.pick(r)
	w.user, w.password = c.Username, c.Password
	w.install = p.ref.AddDate(0, 0, -(200 + r.IntN(900))).Add(time.Duration(r.IntN(86400)) * time.Second)
	w.boot = p.ref.AddDate(0, 0, -(1 + r.IntN(40))).Add(time.Duration(r.IntN(86400)) * time.Second)
	if hwVirtual {
		w.cpuModel = pickOne(r, []string{"Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "Intel(R) Xeon(R) Gold 5318Y CPU @ 2.10GHz"})
		w.sockets, w.cores = 1, pickOne(r, []int{2, 4, 8})
		w.memBytes = int64(pickOne(r, []int{8, 16, 32})) << 30
		w.biosVer = "VMW71.00V.21100432.B64.2301110304"
		w.nicDescr = "vmxnet3 Ethernet Adapter"
		w.mhz = 1995
	} else {
		w.cpuModel = pickOne(r, []string{"Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", "Intel(R) Xeon(R) Gold 5315Y CPU @ 3.20GHz"})
		w.sockets, w.cores = 2, pickOne(r, []int{8, 16})
		w.memBytes = int64(pickOne(r, []int{64, 128, 256})) << 30
		w.biosVer = pickOne(r, []string{"1.13.2", "U46 v2.90"})
		w.nicDescr = pickOne(r, []string{"Broadcom NetXtreme E-Series Advanced Dual-port 25Gb SFP28 Ethernet OCP 3.0 Adapter", "Intel(R) Ethernet Controller E810-XXV for OCP 3.0"})
		w.mhz = 2394
	}
	w.logical = w.cores * 2
	w.mac = strings.ToUpper(h.m.MACs[0])
	w.addr = netip.PrefixFrom(h.ip, p.prefix.Bits())
	sys := int64(pickOne(r, []int{80, 100, 127})) << 30
	w.disks = []Disk{{DeviceID: "C:", VolumeName: "", FileSystem: "NTFS", SizeBytes: sys, FreeBytes: sys * int64(20+r.IntN(60)) / 100}}
	if r.IntN(2) == 0 {
		data := int64(pickOne(r, []int{200, 500, 1024})) << 30
		w.disks = append(w.disks, Disk{DeviceID: "D:", VolumeName: "Data", FileSystem: "NTFS", SizeBytes: data, FreeBytes: data * int64(10+r.IntN(80)) / 100})
	}
	for _, i := range r.Perm(len(winSoftwarePool))[:3+r.IntN(4)] {
		sw := winSoftwarePool[i]
		if sw.name == "VMware Tools" && !hwVirtual {
			continue
		}
		w.software = append(w.software, sw)
	}
	if hwVirtual && !hasSoftware(w.software, "VMware Tools") {
		w.software = append(w.software, winSoftware{"VMware Tools", "12.4.5.23787635", "VMware, Inc.", "20240614"})
	}
	pid := 400 + r.IntN(400)
	for _, s := range winBaseServices {
		if s.running {
			s.pid = pid
			pid += 4 * (1 + r.IntN(200))
		}
		w.services = append(w.services, s)
	}
	if hasSoftware(w.software, "Microsoft SQL Server 2019 (64-bit)") {
		w.services = append(w.services, winService{name: "MSSQLSERVER", display: "SQL Server (MSSQLSERVER)", running: true, pid: pid, ports: []int{1433}})
	}
	for _, s := range w.services {
		for _, port := range s.ports {
			w.listen = append(w.listen, winListener{addr: "0.0.0.0", port: port, pid: s.pid}, winListener{addr: "::", port: port, pid: s.pid})
		}
	}
	h.win = w
	h.m.CPUModel, h.m.CPUs, h.m.MemoryBytes = w.cpuModel, w.sockets*w.logical, w.memBytes
	h.m.Interfaces = []Interface{{Index: 1, Name: w.nicDescr, MAC: h.m.MACs[0], IPv4: []string{w.addr.String()}, Up: true}}
	h.m.Disks = w.disks
	for _, s := range w.software {
		h.m.Software = append(h.m.Software, Software{Name: s.name, Version: s.version})
	}
	for _, s := range w.services {
		if s.running {
			h.m.Services = append(h.m.Services, s.name)
		}
	}
	h.m.Credentials.WinRM = &WinRMCredential{Username: w.user, Password: w.password}
	h.m.WinRM = WinRMOn
}

func hasSoftware(sw []winSoftware, name string) bool {
	for _, s := range sw {
		if s.name == name {
			return true
		}
	}
	return false
}

// applyWindowsGuarantees gives a lab with three or more Windows hosts the two cases a
// test needs besides working WinRM: the last Windows host has WinRM stopped (5985
// closed), the one before refuses the estate's credentials; the first also takes Basic.
func (p *plan) applyWindowsGuarantees() {
	var win []*host
	for _, h := range p.hosts {
		if h.win != nil {
			win = append(win, h)
		}
	}
	if len(win) == 0 {
		return
	}
	win[0].win.basic = true
	if len(win) < 3 {
		return
	}
	off, refuses := win[len(win)-1], win[len(win)-2]
	off.win.mode, off.m.WinRM = WinRMOff, WinRMOff
	off.m.Credentials.WinRM = nil
	var kept []service
	for _, s := range off.services {
		if s.port != 5985 {
			kept = append(kept, s)
		}
	}
	off.services = kept
	off.m.Web = nil
	delete(off.web, 5985)
	for i := range off.win.services {
		if off.win.services[i].name == "WinRM" {
			off.win.services[i].running = false
		}
	}
	off.m.Services = removeString(off.m.Services, "WinRM")
	refuses.win.mode, refuses.m.WinRM = WinRMRefuses, WinRMRefuses
	refuses.m.Credentials.WinRM = nil
	// nobody was given this password: it is not in any pool
	refuses.win.password = password(rng(p.cfg.Seed, "windows-refuses", refuses.idx), 18)
}

func removeString(s []string, x string) []string {
	var out []string
	for _, v := range s {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

// winCredentialPool: most Windows hosts share the discovery service account, some only
// know their local Administrator.
type winCredentialPool struct {
	creds   []WinRMCredential
	weights []int
}

func newWinCredentialPool(seed int64) *winCredentialPool {
	r := rng(seed, "winrm-credentials", 0)
	return &winCredentialPool{
		creds:   []WinRMCredential{{"svc-outpost", password(r, 16)}, {"Administrator", password(r, 14)}},
		weights: []int{75, 25},
	}
}

func (c *winCredentialPool) pick(r *rand.Rand) WinRMCredential {
	return c.creds[pickWeighted(r, c.weights)]
}
