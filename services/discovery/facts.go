package discovery

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/ldapsearch"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
)

// SNMP OIDs discovery reads (numeric, without the leading dot).
const (
	oidSysDescr      = "1.3.6.1.2.1.1.1.0"
	oidSysObjectID   = "1.3.6.1.2.1.1.2.0"
	oidSysName       = "1.3.6.1.2.1.1.5.0"
	oidSysServices   = "1.3.6.1.2.1.1.7.0"
	oidIfNumber      = "1.3.6.1.2.1.2.1.0"
	oidIfDescr       = "1.3.6.1.2.1.2.2.1.2."
	oidIfPhys        = "1.3.6.1.2.1.2.2.1.6."
	oidIfSpeed       = "1.3.6.1.2.1.2.2.1.5."
	oidIfOper        = "1.3.6.1.2.1.2.2.1.8."
	oidIfName        = "1.3.6.1.2.1.31.1.1.1.1."
	oidLldpLocPort   = "1.0.8802.1.1.2.1.3.7.1.3."
	oidLldpRemPort   = "1.0.8802.1.1.2.1.4.1.1.7."
	oidLldpRemSys    = "1.0.8802.1.1.2.1.4.1.1.9."
	oidLldpRemChasis = "1.0.8802.1.1.2.1.4.1.1.5."
	// lldpLocChassisId, lldpRemManAddrIfSubtype, cdpCacheAddress/DeviceId/DevicePort
	oidLldpLocChassis = "1.0.8802.1.1.2.1.3.2.0"
	oidLldpRemManAddr = "1.0.8802.1.1.2.1.4.2.1.3."
	oidCdpAddress     = "1.3.6.1.4.1.9.9.23.1.2.1.1.4."
	oidCdpDeviceID    = "1.3.6.1.4.1.9.9.23.1.2.1.1.6."
	oidCdpDevicePort  = "1.3.6.1.4.1.9.9.23.1.2.1.1.7."
)

// HTTPFact is what http_get found on a port.
type HTTPFact struct {
	Status int    `json:"status"`
	Server string `json:"server,omitempty"`
	Title  string `json:"title,omitempty"`
	TLS    bool   `json:"tls,omitempty"`
}

// Facts are everything learned about one host; classifiers match on them.
type Facts struct {
	IP         string            `json:"ip"`
	Ports      []int             `json:"ports,omitempty"`
	SSH        map[string]string `json:"ssh,omitempty"` // command → stdout (exit 0 only)
	SSHVersion string            `json:"ssh_version,omitempty"`
	SSHFailed  bool              `json:"ssh_failed,omitempty"` // every credential was refused
	// SSHHostKey is the host key fingerprint seen (and on record at the hub).
	SSHHostKey string `json:"ssh_host_key,omitempty"`
	// SSHHostKeyChanged says the host presented another key than the one on record.
	SSHHostKeyChanged string                     `json:"ssh_host_key_changed,omitempty"`
	SNMP              map[string]any             `json:"snmp,omitempty"` // oid → value
	HTTP              map[int]HTTPFact           `json:"http,omitempty"`
	TLS               map[int]probes.Certificate `json:"tls,omitempty"`  // port → leaf certificate
	LDAP              map[string][]string        `json:"ldap,omitempty"` // root DSE attributes
	// WinRM is what each winrm_exec command printed (exit 0 only): script → stdout.
	WinRM map[string]string `json:"winrm,omitempty"`

	// object is what the ruleset's sys_object_ids say about the sysObjectID (set by Classify).
	object *ObjectID
}

// HasPort says whether port answered.
func (f *Facts) HasPort(p int) bool { return slices.Contains(f.Ports, p) }

// Banner is the SSH server version and every HTTP Server header, one per line.
func (f *Facts) Banner() string {
	parts := []string{f.SSHVersion}
	for _, h := range f.HTTP {
		parts = append(parts, h.Server)
	}
	return strings.Join(parts, "\n")
}

// SNMPString is an SNMP value as text ("" when absent).
func (f *Facts) SNMPString(oid string) string {
	v, ok := f.SNMP[oid]
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// Source is the text a regex extraction reads: ssh:<command>, snmp:<oid>, http:server,
// http:title, banner.
func (f *Facts) Source(from string) string {
	kind, arg, _ := strings.Cut(from, ":")
	switch kind {
	case "ssh":
		return f.SSH[arg]
	case "snmp":
		return f.SNMPString(strings.TrimPrefix(arg, "."))
	case "http":
		var out []string
		for _, p := range sortedKeys(f.HTTP) {
			h := f.HTTP[p]
			if arg == "title" {
				out = append(out, h.Title)
			} else {
				out = append(out, h.Server)
			}
		}
		return strings.Join(out, "\n")
	case "banner":
		return f.Banner()
	}
	return ""
}

func sortedKeys[V any](m map[int]V) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// exprEnv is what expressions see: ip, ports, ssh, snmp, http, tls, ldap, banner, and helpers
// os_release(key) (from `cat /etc/os-release`), has_port(p), first_line(s), lines(s).
func exprEnv(f *Facts) map[string]any {
	httpm := map[string]any{}
	for p, h := range f.HTTP {
		httpm[strconv.Itoa(p)] = map[string]any{"status": h.Status, "server": h.Server, "title": h.Title}
	}
	return map[string]any{
		"ip": f.IP, "ports": f.Ports, "ssh": nonNil(f.SSH), "snmp": nonNilAny(f.SNMP), "http": httpm,
		"banner": f.Banner(), "ssh_failed": f.SSHFailed, "ldap": f.LDAP,
		"has_port":   func(p int) bool { return f.HasPort(p) },
		"os_release": func(k string) string { return osRelease(f.SSH["cat /etc/os-release"])[k] },
		"first_line": func(s string) string { l, _, _ := strings.Cut(strings.TrimSpace(s), "\n"); return strings.TrimSpace(l) },
		"lines":      func(s string) []string { return nonEmptyLines(s) },
		"number":     firstNumber,
		"snmp_str":   func(oid string) string { return f.SNMPString(strings.TrimPrefix(oid, ".")) },
		// snmp_int is a numeric SNMP value, -1 when absent or not a number.
		"snmp_int": func(oid string) int { return f.snmpInt(oid) },
		// oid_kind and oid_vendor: the sys_object_ids entry of the sysObjectID ("" when none).
		"oid_kind":   func() string { return f.objectField(func(o *ObjectID) string { return o.Kind }) },
		"oid_vendor": func() string { return f.objectField(func(o *ObjectID) string { return o.Vendor }) },
		// has_layer(n): sysServices (RFC 1213) has the bit of OSI layer n (1, 2, 3, 4, 7).
		"has_layer": func(n int) bool {
			v := f.snmpInt(oidSysServices)
			return v >= 0 && n >= 1 && n <= 7 && v&(1<<(n-1)) != 0
		},
	}
}

func (f *Facts) snmpInt(oid string) int {
	n, err := strconv.Atoi(f.SNMPString(strings.TrimPrefix(oid, ".")))
	if err != nil {
		return -1
	}
	return n
}

func (f *Facts) objectField(get func(*ObjectID) string) string {
	if f.object == nil {
		return ""
	}
	return get(f.object)
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func nonNilAny(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// osRelease parses /etc/os-release.
func osRelease(s string) map[string]string {
	out := map[string]string{}
	for _, l := range nonEmptyLines(s) {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		out[k] = strings.Trim(v, `"'`)
	}
	return out
}

// Adapter is a network interface of a device.
type Adapter struct {
	Name   string
	MAC    string
	Up     bool
	Index  int
	Speed  int64
	MTU    int
	Addrs  []string // CIDR
	Loopbk bool
}

// parseIPLink reads `ip -o link` (Linux).
func parseIPLink(s string) []Adapter {
	var out []Adapter
	for _, l := range nonEmptyLines(s) {
		idx, rest, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		name, rest, ok := strings.Cut(rest, ": ")
		if !ok {
			continue
		}
		a := Adapter{Name: strings.TrimSuffix(name, "@NONE")}
		a.Index, _ = strconv.Atoi(idx)
		f := strings.Fields(strings.ReplaceAll(rest, `\`, " "))
		for i := 0; i+1 < len(f); i++ {
			switch f[i] {
			case "mtu":
				a.MTU, _ = strconv.Atoi(f[i+1])
			case "state":
				a.Up = f[i+1] == "UP" || f[i+1] == "UNKNOWN"
			case "link/ether":
				a.MAC = strings.ToLower(f[i+1])
			case "link/loopback":
				a.Loopbk = true
			}
		}
		if !a.Loopbk && a.MAC != "" {
			out = append(out, a)
		}
	}
	return out
}

// parseIPAddr adds `ip -o addr` IPv4 addresses to the adapters by name.
func parseIPAddr(s string, ads []Adapter) []Adapter {
	for _, l := range nonEmptyLines(s) {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "inet" {
			continue
		}
		for i := range ads {
			if ads[i].Name == f[1] {
				ads[i].Addrs = append(ads[i].Addrs, f[3])
			}
		}
	}
	return ads
}

// Package is an installed package.
type Package struct{ Name, Version string }

// parsePackages reads "name<TAB>version" lines (dpkg-query -W, rpm -qa --qf).
func parsePackages(s string) []Package {
	var out []Package
	for _, l := range strings.Split(s, "\n") {
		n, v, ok := strings.Cut(strings.TrimSpace(l), "\t")
		if !ok || n == "" {
			continue
		}
		out = append(out, Package{Name: n, Version: strings.TrimSpace(v)})
	}
	return out
}

// Listener is a listening TCP socket and its process (ss -tlnp).
type Listener struct {
	Port    int
	Process string
}

// parseSS reads `ss -tulnp`: listening TCP sockets with their process names.
func parseSS(s string) []Listener {
	var out []Listener
	seen := map[string]bool{}
	for _, l := range nonEmptyLines(s) {
		f := strings.Fields(l)
		if len(f) < 6 || f[0] != "tcp" || f[1] != "LISTEN" {
			continue
		}
		local := f[4]
		i := strings.LastIndexByte(local, ':')
		port, err := strconv.Atoi(local[i+1:])
		if err != nil {
			continue
		}
		proc := ""
		if j := strings.Index(l, `users:(("`); j >= 0 {
			proc, _, _ = strings.Cut(l[j+len(`users:(("`):], `"`)
		}
		key := proc + "/" + strconv.Itoa(port)
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, Listener{Port: port, Process: proc})
	}
	return out
}

// snmpTable collects the rows of a column: index suffix → value.
func (f *Facts) snmpColumn(prefix string) map[string]any {
	out := map[string]any{}
	for oid, v := range f.SNMP {
		if s, ok := strings.CutPrefix(oid, prefix); ok {
			out[s] = v
		}
	}
	return out
}

// snmpAdapters reads ifTable/ifXTable.
func (f *Facts) snmpAdapters() []Adapter {
	var out []Adapter
	descr := f.snmpColumn(oidIfDescr)
	phys := f.snmpColumn(oidIfPhys)
	names := f.snmpColumn(oidIfName)
	speed := f.snmpColumn(oidIfSpeed)
	oper := f.snmpColumn(oidIfOper)
	idxs := make([]int, 0, len(descr))
	for k := range descr {
		n, err := strconv.Atoi(k)
		if err == nil {
			idxs = append(idxs, n)
		}
	}
	slices.Sort(idxs)
	for _, i := range idxs {
		k := strconv.Itoa(i)
		a := Adapter{Index: i, Name: fmt.Sprint(descr[k])}
		if n, ok := names[k].(string); ok && n != "" {
			a.Name = n
		}
		if m, ok := phys[k].(string); ok {
			a.MAC = strings.ToLower(m)
		}
		if sp, ok := speed[k].(float64); ok {
			a.Speed = int64(sp)
		}
		if o, ok := oper[k].(float64); ok {
			a.Up = o == 1
		}
		out = append(out, a)
	}
	return out
}

// lldpNeighbours lists the remote systems seen on local ports over LLDP and CDP, with what
// identifies each neighbour besides its name (chassis id, management address).
func (f *Facts) lldpNeighbours() []LLDPNeighbour {
	sys := f.snmpColumn(oidLldpRemSys)
	ports := f.snmpColumn(oidLldpRemPort)
	chassis := f.snmpColumn(oidLldpRemChasis)
	loc := f.snmpColumn(oidLldpLocPort)
	// management addresses: index timeMark.localPort.remIndex.subtype(1=ipv4).len(4).a.b.c.d
	mgmt := map[string]string{}
	for k := range f.snmpColumn(oidLldpRemManAddr) {
		parts := strings.Split(k, ".")
		if len(parts) == 9 && parts[3] == "1" && parts[4] == "4" {
			if a, err := netip.ParseAddr(strings.Join(parts[5:], ".")); err == nil {
				mgmt[strings.Join(parts[:3], ".")] = a.String()
			}
		}
	}
	var out []LLDPNeighbour
	for k, v := range sys {
		// index: timeMark.localPortNum.remIndex
		parts := strings.Split(k, ".")
		local := ""
		if len(parts) >= 2 {
			local = fmt.Sprint(loc[parts[1]])
		}
		out = append(out, LLDPNeighbour{LocalPort: local, RemoteName: fmt.Sprint(v), RemotePort: fmt.Sprint(ports[k]),
			RemoteChassis: chassisID(chassis[k]), RemoteAddress: mgmt[k], Protocol: "lldp"})
	}
	// CDP: index ifIndex.deviceIndex; the local port is the interface's name
	names := f.snmpColumn(oidIfName)
	descr := f.snmpColumn(oidIfDescr)
	cdpPorts := f.snmpColumn(oidCdpDevicePort)
	cdpAddrs := f.snmpColumn(oidCdpAddress)
	for k, v := range f.snmpColumn(oidCdpDeviceID) {
		ifIndex, _, _ := strings.Cut(k, ".")
		local := fmt.Sprint(names[ifIndex])
		if names[ifIndex] == nil {
			local = fmt.Sprint(descr[ifIndex])
		}
		out = append(out, LLDPNeighbour{LocalPort: local, RemoteName: fmt.Sprint(v), RemotePort: fmt.Sprint(cdpPorts[k]),
			RemoteAddress: octetsIPv4(cdpAddrs[k]), Protocol: "cdp"})
	}
	slices.SortFunc(out, func(a, b LLDPNeighbour) int {
		return strings.Compare(a.Protocol+a.LocalPort+a.RemoteName, b.Protocol+b.LocalPort+b.RemoteName)
	})
	return out
}

// chassisID normalises an LLDP chassis id (MAC "aa:bb:…" or hex "aabb…") to lower-case hex.
func chassisID(v any) string {
	s, ok := v.(string)
	if !ok {
		return ""
	}
	return strings.ToLower(strings.NewReplacer(":", "", "-", "", ".", "").Replace(s))
}

// octetsIPv4 reads a 4-octet address as the probe renders it (hex, or text when printable).
func octetsIPv4(v any) string {
	s, _ := v.(string)
	var b []byte
	if h, err := hex.DecodeString(s); err == nil && len(h) == 4 {
		b = h
	} else if len(s) == 4 {
		b = []byte(s)
	}
	if a, ok := netip.AddrFromSlice(b); ok {
		return a.String()
	}
	return ""
}

// LocalChassis is the device's own LLDP chassis id (lldpLocChassisId), normalised.
func (f *Facts) LocalChassis() string { return chassisID(f.SNMP[oidLldpLocChassis]) }

// --- reading probe result data: the kinds' own types, from their contract packages ---

// snmpData reads a chunk of snmp_get or snmp_walk: its values and, in a final chunk, which
// credential worked and which were refused.
func snmpData(res *envelope.Result) ([]snmp.Value, snmp.Attempt, error) {
	switch {
	case res.Kind == snmpget.Kind:
		v, err := decode[snmpget.Result](res.Data)
		return v.Values, v.Attempt, err
	case !res.Final:
		v, err := decode[snmpwalk.Page](res.Data)
		return v.Values, snmp.Attempt{}, err
	}
	v, err := decode[snmpwalk.Result](res.Data)
	return v.Values, v.Attempt, err
}

// ldapData reads a chunk of ldap_search: its entries and, in the final chunk, the
// credentials that worked and failed.
func ldapData(res *envelope.Result) ([]ldapsearch.Entry, string, []string, error) {
	if !res.Final {
		v, err := decode[ldapsearch.Page](res.Data)
		return v.Entries, "", nil, err
	}
	v, err := decode[ldapsearch.Result](res.Data)
	return v.Results, v.Credential, v.FailedCredentials, err
}

// scanHosts reads the addresses of a tcp_scan chunk (a streamed batch, or the final
// summary, which carries them itself when the bridge did not stream).
func scanHosts(res *envelope.Result) ([]tcpscan.Host, error) {
	if res.Final {
		v, err := decode[tcpscan.Summary](res.Data)
		return v.Hosts, err
	}
	v, err := decode[tcpscan.Chunk](res.Data)
	return v.Hosts, err
}

// addSNMP merges SNMP values (OIDs without the leading dot; null values are skipped).
func (f *Facts) addSNMP(vals []snmp.Value) {
	for _, v := range vals {
		if v.Value == nil {
			continue
		}
		if f.SNMP == nil {
			f.SNMP = map[string]any{}
		}
		f.SNMP[strings.TrimPrefix(v.OID, ".")] = v.Value
	}
}

func (f *Facts) addSSH(r *sshexec.Result) {
	if r.ServerVersion != "" {
		f.SSHVersion = r.ServerVersion
	}
	for _, o := range r.Outputs {
		if o.ExitCode == nil || *o.ExitCode != 0 {
			continue
		}
		if f.SSH == nil {
			f.SSH = map[string]string{}
		}
		f.SSH[o.Command] = o.Stdout.Text
	}
}

func decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

var numberRE = regexp.MustCompile(`-?\d+(\.\d+)?`)

// firstNumber is the first number in s (0 when none).
func firstNumber(s string) float64 {
	n, _ := strconv.ParseFloat(numberRE.FindString(s), 64)
	return n
}
