package discovery

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// SourceName is the CMDB source of what discovery reports.
const SourceName = "discovery"

// BuildPayload turns a classified host into a CI payload: the device (or, for an
// application class, a server with the application on it) with its adapters, addresses,
// installed software, listening applications and served certificates.
func BuildPayload(rules *Ruleset, h *Host, classifier *Classifier, observed time.Time) *envelope.CIPayload {
	p := &envelope.CIPayload{Source: SourceName, Observed: observed}
	rootClass := h.Class
	appClass := ""
	if slices.Contains(applicationClasses, h.Class) {
		appClass = h.Class
		rootClass = "server"
		if classifier != nil && classifier.Host != "" {
			rootClass = classifier.Host
		}
	}
	root := map[string]any{"ip_address": h.IP}
	for k, v := range h.Attributes {
		root[k] = v
	}
	if appClass != "" { // the extracted attributes describe the application
		root = map[string]any{"ip_address": h.IP}
	}
	if n, _ := root["name"].(string); n == "" {
		root["name"] = h.IP
	}
	if h.Facts.SSHHostKey != "" {
		root["ssh_host_key"] = h.Facts.SSHHostKey
	}
	winInv, _ := h.Facts.windowsInventory()
	if winInv != nil && appClass == "" {
		windowsAttributes(root, winInv)
	}
	// what the class rests on, for the CMDB's precedence when two addresses are one machine
	switch {
	case winInv != nil && appClass == "":
		root["class_evidence"], root["class_evidence_source"] = "credentialed", "winrm_inventory on "+h.IP
	case classifier != nil && classifier.Evidence != "":
		root["class_evidence"], root["class_evidence_source"] = classifier.Evidence, classifier.Name+" on "+h.IP
	}
	if s, ok := root["serial_number"].(string); ok && s == "" {
		delete(root, "serial_number")
	}
	p.Items = append(p.Items, envelope.CIItem{Ref: "host", Class: rootClass, NativeKey: h.IP, Attributes: root})

	// adapters and addresses
	var adapters []Adapter
	if out, ok := h.Facts.SSH["ip -o link"]; ok {
		adapters = parseIPAddr(h.Facts.SSH["ip -o addr"], parseIPLink(out))
	} else if winInv != nil {
		adapters = windowsAdapters(winInv)
	} else if len(h.Facts.SNMP) > 0 {
		for _, a := range h.Facts.snmpAdapters() {
			if a.MAC != "" && a.MAC != "00:00:00:00:00:00" {
				adapters = append(adapters, a)
			}
		}
	}
	hostIPSeen := false
	for i, a := range adapters {
		ref := "nic" + strconv.Itoa(i)
		attrs := map[string]any{"name": a.Name, "mac_address": a.MAC}
		if a.Index > 0 {
			attrs["if_index"] = a.Index
		}
		if a.MTU > 0 {
			attrs["mtu"] = a.MTU
		}
		if a.Speed > 0 {
			attrs["speed_mbps"] = int(a.Speed / 1_000_000)
		}
		attrs["oper_status"] = map[bool]string{true: "up", false: "down"}[a.Up]
		p.Items = append(p.Items, envelope.CIItem{Ref: ref, Class: "network_adapter", Parent: "host", Attributes: attrs})
		for j, cidr := range a.Addrs {
			pfx, err := netip.ParsePrefix(cidr)
			if err != nil {
				continue
			}
			if pfx.Addr().String() == h.IP {
				hostIPSeen = true
			}
			p.Items = append(p.Items, envelope.CIItem{Ref: fmt.Sprintf("%s-ip%d", ref, j), Class: "ip_address", Parent: ref,
				Attributes: map[string]any{"name": pfx.Addr().String(), "address": pfx.Addr().String(), "prefix_length": pfx.Bits(), "ip_version": map[bool]int{true: 4, false: 6}[pfx.Addr().Is4()]}})
		}
	}
	if winInv != nil && appClass == "" {
		windowsItems(p, winInv, h.IP)
	}
	if !hostIPSeen {
		p.Items = append(p.Items, envelope.CIItem{Ref: "ip", Class: "ip_address", Parent: "host",
			Attributes: map[string]any{"name": h.IP, "address": h.IP, "ip_version": 4}})
	}

	// installed software
	for cmd, out := range h.Facts.SSH {
		if !strings.HasPrefix(cmd, "dpkg-query") && !strings.HasPrefix(cmd, "rpm ") {
			continue
		}
		for i, pkg := range parsePackages(out) {
			p.Items = append(p.Items, envelope.CIItem{Ref: "sw" + strconv.Itoa(i), Class: "software", Parent: "host",
				Attributes: map[string]any{"name": pkg.Name, "version": pkg.Version}})
		}
	}

	// applications: listening processes, or the application the host was classified as
	type app struct {
		ref   string
		class string
		ports []int
	}
	var apps []app
	if out, ok := h.Facts.SSH["ss -tulnp"]; ok && rules != nil {
		byRule := map[int][]int{}
		procs := map[int]string{}
		for _, l := range parseSS(out) {
			for i, rule := range rules.Applications {
				if rule.re != nil && rule.re.MatchString(l.Process) {
					if !slices.Contains(byRule[i], l.Port) {
						byRule[i] = append(byRule[i], l.Port)
					}
					procs[i] = l.Process
					break
				}
			}
		}
		for i, rule := range rules.Applications {
			ports := byRule[i]
			if len(ports) == 0 {
				continue
			}
			slices.Sort(ports)
			ref := "app" + strconv.Itoa(len(apps))
			attrs := map[string]any{"name": rule.Name, "port": ports[0], "tcp_ports": ports, "process_name": procs[i], "running": true}
			if rule.Engine != "" && rule.Class == "database" {
				attrs["engine"] = rule.Engine
			}
			if rule.Class == "web_server" {
				attrs["tls"] = slices.ContainsFunc(ports, func(p int) bool { _, ok := h.Facts.TLS[p]; return ok })
				if hf, ok := h.Facts.HTTP[ports[0]]; ok && hf.Server != "" {
					attrs["server_header"] = hf.Server
				}
			}
			attrs["ip_address"] = h.IP
			p.Items = append(p.Items, envelope.CIItem{Ref: ref, Class: rule.Class, Parent: "host", Attributes: attrs})
			apps = append(apps, app{ref: ref, class: rule.Class, ports: ports})
		}
	}
	if appClass == "web_server" {
		for _, port := range sortedKeys(h.Facts.HTTP) {
			hf := h.Facts.HTTP[port]
			ref := "app" + strconv.Itoa(len(apps))
			name := hf.Server
			if name == "" {
				name = "web"
			}
			name, _, _ = strings.Cut(name, "/")
			_, tls := h.Facts.TLS[port]
			attrs := map[string]any{"name": name, "port": port, "tcp_ports": []int{port}, "tls": tls, "running": true, "ip_address": h.IP}
			if hf.Server != "" {
				attrs["server_header"] = hf.Server
			}
			p.Items = append(p.Items, envelope.CIItem{Ref: ref, Class: "web_server", Parent: "host", Attributes: attrs})
			apps = append(apps, app{ref: ref, class: "web_server", ports: []int{port}})
		}
	} else if appClass != "" {
		var ports []int
		for _, port := range []int{389, 636} {
			if h.Facts.HasPort(port) {
				ports = append(ports, port)
			}
		}
		if len(ports) == 0 {
			ports = slices.Clone(h.Facts.Ports)
		}
		attrs := map[string]any{"name": appClass, "running": true, "ip_address": h.IP}
		if len(ports) > 0 {
			attrs["port"], attrs["tcp_ports"] = ports[0], ports
		}
		for k, v := range h.Attributes {
			if s, ok := v.(string); !ok || s != "" {
				attrs[k] = v
			}
		}
		if nc := h.Facts.LDAP["namingContexts"]; len(nc) > 0 {
			attrs["naming_contexts"] = nc
			attrs["base_dn"] = nc[0]
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: "app0", Class: appClass, Parent: "host", Attributes: attrs})
		apps = append(apps, app{ref: "app0", class: appClass, ports: ports})
	}

	// certificates served, each hosted on the application of its port (else the host)
	seen := map[string]bool{}
	for _, port := range sortedKeys(h.Facts.TLS) {
		c := h.Facts.TLS[port]
		if c.SHA256 == "" || seen[c.SHA256] {
			continue
		}
		seen[c.SHA256] = true
		ref := "cert-" + c.SHA256[:12]
		attrs := map[string]any{"name": c.SubjectCN, "fingerprint": c.SHA256, "subject": c.Subject, "issuer": c.Issuer,
			"serial_number": c.Serial, "not_before": c.NotBefore.UTC().Format(time.RFC3339), "not_after": c.NotAfter.UTC().Format(time.RFC3339),
			"self_signed": c.SelfSigned}
		if sans := append(slices.Clone(c.DNSNames), c.IPs...); len(sans) > 0 {
			attrs["subject_alt_names"] = sans
		}
		if c.KeyAlgorithm != "" {
			attrs["key_algorithm"] = c.KeyAlgorithm
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: ref, Class: "certificate", Attributes: attrs})
		to := "host"
		for _, a := range apps {
			if a.class == "web_server" && slices.Contains(a.ports, port) {
				to = a.ref
				break
			}
		}
		p.Relations = append(p.Relations, envelope.CIRelation{Type: "hosted_on", From: ref, To: to})
	}
	return p
}

// payloadID makes a payload's message id stable: a payload resent after a crash is
// deduplicated by the stream.
func payloadID(run, key string) string {
	sum := sha256.Sum256([]byte(run + "\x00" + key))
	return "disc-" + hex.EncodeToString(sum[:12])
}

func stub(ref string, h *Host) envelope.CIItem {
	attrs := map[string]any{"name": h.Name, "ip_address": h.IP}
	if s, _ := h.Attributes["serial_number"].(string); s != "" {
		attrs["serial_number"] = s
	}
	return envelope.CIItem{Ref: ref, Class: h.Class, NativeKey: h.IP, Attributes: attrs}
}

func sortedHostIPs(rs *runState) []string {
	ips := make([]string, 0, len(rs.hosts))
	for ip := range rs.hosts {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, func(a, b string) int {
		x, _ := netip.ParseAddr(a)
		y, _ := netip.ParseAddr(b)
		return x.Compare(y)
	})
	return ips
}
