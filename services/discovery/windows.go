package discovery

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
)

// Windows discovery: the windows classifier's explore probe (classifiers/default.yaml,
// winrm_inventory) runs one PowerShell script over WinRM that prints the host's inventory
// as JSON (ConvertTo-Json of an [ordered]@{} of CIM objects, the registry's Uninstall keys,
// running services and listening sockets). Its stdout lands in Facts.WinRM under the
// script's text; here it becomes the windows_server's identity and its dependent CIs.

// winInventory is the JSON the inventory script prints (Windows PowerShell 5.1's
// ConvertTo-Json: a property holding one object is that object, several are an array —
// hence the one-or-many type).
type winInventory struct {
	ComputerSystem struct {
		Name                      string `json:"Name"`
		Domain                    string `json:"Domain"`
		PartOfDomain              bool   `json:"PartOfDomain"`
		Manufacturer              string `json:"Manufacturer"`
		Model                     string `json:"Model"`
		NumberOfProcessors        int    `json:"NumberOfProcessors"`
		NumberOfLogicalProcessors int    `json:"NumberOfLogicalProcessors"`
		TotalPhysicalMemory       int64  `json:"TotalPhysicalMemory"`
	} `json:"computer_system"`
	BIOS struct {
		SerialNumber      string `json:"SerialNumber"`
		Manufacturer      string `json:"Manufacturer"`
		SMBIOSBIOSVersion string `json:"SMBIOSBIOSVersion"`
	} `json:"bios"`
	OS struct {
		Caption                 string `json:"Caption"`
		Version                 string `json:"Version"`
		BuildNumber             string `json:"BuildNumber"`
		OSArchitecture          string `json:"OSArchitecture"`
		ServicePackMajorVersion int    `json:"ServicePackMajorVersion"`
	} `json:"os"`
	Processors oneOrMany[struct {
		DeviceID                  string `json:"DeviceID"`
		Name                      string `json:"Name"`
		NumberOfCores             int    `json:"NumberOfCores"`
		NumberOfLogicalProcessors int    `json:"NumberOfLogicalProcessors"`
		MaxClockSpeed             int    `json:"MaxClockSpeed"`
	}] `json:"processors"`
	Disks oneOrMany[struct {
		DeviceID   string `json:"DeviceID"`
		VolumeName string `json:"VolumeName"`
		FileSystem string `json:"FileSystem"`
		Size       int64  `json:"Size"`
		FreeSpace  int64  `json:"FreeSpace"`
	}] `json:"disks"`
	Adapters oneOrMany[struct {
		Index       int               `json:"Index"`
		Description string            `json:"Description"`
		MACAddress  string            `json:"MACAddress"`
		IPAddress   oneOrMany[string] `json:"IPAddress"`
		IPSubnet    oneOrMany[string] `json:"IPSubnet"`
		DHCPEnabled bool              `json:"DHCPEnabled"`
	}] `json:"adapters"`
	Software oneOrMany[struct {
		DisplayName    string `json:"DisplayName"`
		DisplayVersion string `json:"DisplayVersion"`
		Publisher      string `json:"Publisher"`
	}] `json:"software"`
	Services oneOrMany[struct {
		Name        string `json:"Name"`
		DisplayName string `json:"DisplayName"`
	}] `json:"services"`
	Listening oneOrMany[struct {
		LocalAddress  string `json:"LocalAddress"`
		LocalPort     int    `json:"LocalPort"`
		OwningProcess int    `json:"OwningProcess"`
	}] `json:"listening"`
}

// oneOrMany decodes a JSON value or an array of them.
type oneOrMany[T any] []T

func (o *oneOrMany[T]) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	switch {
	case s == "null":
		*o = nil
		return nil
	case strings.HasPrefix(s, "["):
		var v []T
		err := json.Unmarshal(b, &v)
		*o = v
		return err
	}
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*o = oneOrMany[T]{v}
	return nil
}

// addWinRM records what each command of a winrm_exec result printed (exit 0 only).
func (f *Facts) addWinRM(r *winrmexec.Result) {
	for _, o := range r.Outputs {
		if o.ExitCode == nil || *o.ExitCode != 0 || o.Stdout.Truncated {
			continue
		}
		if f.WinRM == nil {
			f.WinRM = map[string]string{}
		}
		f.WinRM[o.Command] = o.Stdout.Text
	}
}

// windowsInventory finds the inventory among the WinRM outputs: the one that decodes
// with a computer system in it.
func (f *Facts) windowsInventory() (*winInventory, error) {
	var lastErr error
	for _, out := range f.WinRM {
		s := strings.TrimSpace(out)
		if !strings.HasPrefix(s, "{") || !strings.Contains(s, `"computer_system"`) {
			continue
		}
		var inv winInventory
		if err := json.Unmarshal([]byte(s), &inv); err != nil {
			lastErr = fmt.Errorf("windows inventory: %w", err)
			continue
		}
		return &inv, nil
	}
	return nil, lastErr
}

// windowsAttributes sets the windows_server's own attributes from the inventory.
func windowsAttributes(root map[string]any, inv *winInventory) {
	cs, os := inv.ComputerSystem, inv.OS
	set := func(k string, v any) {
		switch x := v.(type) {
		case string:
			if strings.TrimSpace(x) == "" {
				return
			}
			v = strings.TrimSpace(x)
		case int:
			if x == 0 {
				return
			}
		}
		root[k] = v
	}
	set("name", cs.Name)
	set("serial_number", inv.BIOS.SerialNumber)
	set("manufacturer", cs.Manufacturer)
	set("model", cs.Model)
	set("bios_version", inv.BIOS.SMBIOSBIOSVersion)
	set("os", os.Caption)
	set("os_version", os.Version)
	set("os_architecture", os.OSArchitecture)
	if os.ServicePackMajorVersion > 0 {
		root["os_service_pack"] = strconv.Itoa(os.ServicePackMajorVersion)
	}
	if cs.PartOfDomain {
		set("windows_domain", cs.Domain)
	}
	set("cpu_count", cs.NumberOfLogicalProcessors)
	cores := 0
	for _, p := range inv.Processors {
		cores += p.NumberOfCores
	}
	set("cpu_core_count", cores)
	if len(inv.Processors) > 0 {
		set("cpu_type", inv.Processors[0].Name)
		set("cpu_speed_mhz", inv.Processors[0].MaxClockSpeed)
	}
	if cs.TotalPhysicalMemory > 0 {
		root["ram_mb"] = int(cs.TotalPhysicalMemory >> 20)
	}
	var disk int64
	for _, d := range inv.Disks {
		disk += d.Size
	}
	if disk > 0 {
		root["disk_space_gb"] = math.Round(float64(disk)/(1<<30)*10) / 10
	}
	m := strings.ToLower(cs.Manufacturer + " " + cs.Model)
	root["virtual"] = strings.Contains(m, "vmware") || strings.Contains(m, "virtual") || strings.Contains(m, "qemu") || strings.Contains(m, "kvm")
}

// windowsAdapters are the IP-enabled adapters with their addresses (CIDR).
func windowsAdapters(inv *winInventory) []Adapter {
	var out []Adapter
	for _, a := range inv.Adapters {
		if a.MACAddress == "" {
			continue
		}
		ad := Adapter{Name: a.Description, MAC: strings.ToLower(strings.ReplaceAll(a.MACAddress, "-", ":")), Index: a.Index, Up: true}
		for i, ip := range a.IPAddress {
			addr, err := netip.ParseAddr(strings.Split(ip, "%")[0])
			if err != nil {
				continue
			}
			bits := addr.BitLen()
			if i < len(a.IPSubnet) {
				bits = maskBits(a.IPSubnet[i], addr)
			}
			ad.Addrs = append(ad.Addrs, netip.PrefixFrom(addr, bits).String())
		}
		out = append(out, ad)
	}
	return out
}

// maskBits reads an IPSubnet entry: "255.255.255.0" for IPv4, "64" for IPv6.
func maskBits(s string, addr netip.Addr) int {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= addr.BitLen() {
		return n
	}
	m, err := netip.ParseAddr(s)
	if err != nil || !m.Is4() {
		return addr.BitLen()
	}
	b := m.As4()
	n := 0
	for _, x := range b {
		for i := 7; i >= 0 && x&(1<<i) != 0; i-- {
			n++
		}
	}
	return n
}

// windowsItems adds the dependent CIs of a Windows host: installed software (registry),
// processors, logical disks, running services and listening TCP ports.
func windowsItems(p *envelope.CIPayload, inv *winInventory, ip string) {
	seen := map[string]bool{}
	for i, s := range inv.Software {
		key := s.DisplayName + "\x00" + s.DisplayVersion
		if s.DisplayName == "" || seen[key] {
			continue // a key without DisplayName is a hidden component; both views list some twice
		}
		seen[key] = true
		attrs := map[string]any{"name": s.DisplayName, "version": s.DisplayVersion}
		if s.Publisher != "" {
			attrs["vendor"] = s.Publisher
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: "sw" + strconv.Itoa(i), Class: "software", Parent: "host", Attributes: attrs})
	}
	for i, c := range inv.Processors {
		p.Items = append(p.Items, envelope.CIItem{Ref: "cpu" + strconv.Itoa(i), Class: "processor", Parent: "host",
			Attributes: map[string]any{"name": c.DeviceID, "cpu_type": c.Name, "core_count": c.NumberOfCores,
				"logical_processors": c.NumberOfLogicalProcessors, "speed_mhz": c.MaxClockSpeed}})
	}
	for i, d := range inv.Disks {
		attrs := map[string]any{"name": d.DeviceID, "file_system": d.FileSystem,
			"size_mb": d.Size >> 20, "free_mb": d.FreeSpace >> 20} // MiB, as SCCM imports give them
		if d.VolumeName != "" {
			attrs["volume_name"] = d.VolumeName
		}
		p.Items = append(p.Items, envelope.CIItem{Ref: "disk" + strconv.Itoa(i), Class: "logical_disk", Parent: "host", Attributes: attrs})
	}
	for i, s := range inv.Services {
		p.Items = append(p.Items, envelope.CIItem{Ref: "svc" + strconv.Itoa(i), Class: "windows_service", Parent: "host",
			Attributes: map[string]any{"name": s.Name, "description": s.DisplayName, "running": true}})
	}
	var ports []int
	for _, l := range inv.Listening {
		if l.LocalPort > 0 && !slices.Contains(ports, l.LocalPort) {
			ports = append(ports, l.LocalPort)
		}
	}
	slices.Sort(ports)
	for _, port := range ports {
		p.Items = append(p.Items, envelope.CIItem{Ref: "tcp" + strconv.Itoa(port), Class: "tcp_listener", Parent: "host",
			Attributes: map[string]any{"name": "tcp/" + strconv.Itoa(port), "port": port, "tcp_ports": []int{port}, "ip_address": ip, "running": true}})
	}
}
