package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Manifest is the truth about a running lab: what every address runs, with
// which credentials, and how the network gear is wired. Tests compare what
// discovery found against it. Everything in it follows from Config.Seed,
// Config.Range and ReferenceTime; slices are never null in JSON.
type Manifest struct {
	Range string `json:"range"`
	Seed  int64  `json:"seed"`
	// Domain is the DNS domain of the simulated company (FQDNs, certificates, directory).
	Domain string `json:"domain"`
	// ReferenceTime is the UTC midnight the lab started on; certificate
	// validity is expressed relative to it.
	ReferenceTime time.Time   `json:"reference_time"`
	Hosts         []Host      `json:"hosts"`
	Neighbours    []Neighbour `json:"neighbours"`
	Directory     *Directory  `json:"directory,omitempty"`
	// AppServices are multi-tier application services (web → app → database) for
	// Service Mapping: entry point and every edge of the traffic.
	AppServices []AppService `json:"app_services"`
}

// Host is one address of the lab. Class is empty for a dead address.
type Host struct {
	IP    string `json:"ip"`
	Name  string `json:"name"`
	FQDN  string `json:"fqdn,omitempty"`
	Class string `json:"class"`
	// Hostile hosts misbehave on purpose; HostileMode is stall, wrong_protocol or stream.
	Hostile     bool   `json:"hostile,omitempty"`
	HostileMode string `json:"hostile_mode,omitempty"`

	Vendor string   `json:"vendor,omitempty"`
	Model  string   `json:"model,omitempty"`
	Serial string   `json:"serial"`
	MACs   []string `json:"macs"`
	// Virtual is true for virtual machines (VMware, KVM).
	Virtual bool `json:"virtual,omitempty"`

	OpenTCP []int `json:"open_tcp"`
	SNMP    bool  `json:"snmp"`

	OS        string `json:"os"`
	OSVersion string `json:"os_version"`
	Kernel    string `json:"kernel,omitempty"`

	CPUModel    string `json:"cpu_model,omitempty"`
	CPUs        int    `json:"cpus,omitempty"`
	MemoryBytes int64  `json:"memory_bytes,omitempty"`

	Software     []Software    `json:"software"`
	Applications []Application `json:"applications,omitempty"`
	// AppServers are the application servers of app tiers (Tomcat, Spring Boot, gunicorn):
	// listening processes discovery has no rule for.
	AppServers   []Application `json:"app_servers,omitempty"`
	Web          []WebService  `json:"web,omitempty"`
	Certificates []Certificate `json:"certificates,omitempty"`
	// Interfaces are the NICs (linux) or the ifTable rows (network gear, printers).
	Interfaces []Interface `json:"interfaces,omitempty"`
	// InterfaceCount is ifNumber for SNMP devices.
	InterfaceCount int `json:"interface_count,omitempty"`

	SysDescr    string `json:"sys_descr,omitempty"`
	SysObjectID string `json:"sys_object_id,omitempty"`
	// SSHHostKey is the SHA256 fingerprint of the SSH host key, as ssh-keygen -l prints it.
	SSHHostKey  string      `json:"ssh_host_key,omitempty"`
	SSHVersion  string      `json:"ssh_version,omitempty"`
	Credentials Credentials `json:"credentials"`

	// WinRM is how a windows_server answers WS-Management: ntlm (5985, NTLM with
	// Credentials.WinRM), refuses_credentials (5985 answers 401 to every credential of the
	// estate) or disabled (5985 closed).
	WinRM string `json:"winrm,omitempty"`
	// Disks are a Windows host's fixed logical disks; Services the names of its running
	// services (Get-Service).
	Disks    []Disk   `json:"disks,omitempty"`
	Services []string `json:"services,omitempty"`
}

// Software is one installed package (name and version as the package manager reports them).
type Software struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Application is a service running on a host.
type Application struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Class   string `json:"class"` // web_server or database
	Process string `json:"process"`
	Ports   []int  `json:"ports"`
}

// WebService is what an HTTP(S) port answers on GET /.
type WebService struct {
	Port   int    `json:"port"`
	TLS    bool   `json:"tls"`
	Server string `json:"server"`
	Status int    `json:"status"`
	Title  string `json:"title,omitempty"`
}

// Certificate is a TLS certificate a host presents (self-signed, ECDSA P-256).
type Certificate struct {
	Ports     []int     `json:"ports"`
	SubjectCN string    `json:"subject_cn"`
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	DNSNames  []string  `json:"dns_names"`
	IPs       []string  `json:"ips"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// SHA256 is the hex SHA-256 of the DER certificate (lower case, no colons).
	SHA256 string `json:"sha256"`
	// State relative to ReferenceTime: valid, expiring (within 14 days) or expired.
	State string `json:"state"`
}

// Interface is a NIC of a linux host or an ifTable row of an SNMP device.
type Interface struct {
	Index  int      `json:"index,omitempty"`
	Name   string   `json:"name"`
	Descr  string   `json:"descr,omitempty"`
	Alias  string   `json:"alias,omitempty"`
	MAC    string   `json:"mac,omitempty"`
	IPv4   []string `json:"ipv4,omitempty"` // CIDR notation
	Up     bool     `json:"up"`
	Speed  int64    `json:"speed,omitempty"` // bits per second
	IfType int      `json:"if_type,omitempty"`
}

// Credentials are what a probe needs to get in, by protocol.
type Credentials struct {
	SSH  *SSHCredential  `json:"ssh,omitempty"`
	SNMP *SNMPCredential `json:"snmp,omitempty"`
	LDAP *LDAPCredential `json:"ldap,omitempty"`
	// WinRM is a Windows account that logs in over WinRM (NTLM).
	WinRM *WinRMCredential `json:"winrm,omitempty"`
}

// SSHCredential is a password login (public keys from Config.AuthorizedKeys work too).
type SSHCredential struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// SNMPCredential: every SNMP device answers v1/v2c with Community; devices with
// a v3 user also answer v3 authPriv with the USM fields.
type SNMPCredential struct {
	Community    string `json:"community"`
	Username     string `json:"username,omitempty"`
	AuthProtocol string `json:"auth_protocol,omitempty"` // SHA
	AuthPassword string `json:"auth_password,omitempty"`
	PrivProtocol string `json:"priv_protocol,omitempty"` // AES (AES-128-CFB)
	PrivPassword string `json:"priv_password,omitempty"`
	EngineID     string `json:"engine_id,omitempty"` // hex
}

// LDAPCredential is a simple bind that may read the whole directory.
type LDAPCredential struct {
	BindDN   string `json:"bind_dn"`
	Password string `json:"password"`
}

// Neighbour is one LLDP adjacency, seen from both ends' SNMP agents.
type Neighbour struct {
	A     string `json:"a"`
	APort string `json:"a_port"`
	B     string `json:"b"`
	BPort string `json:"b_port"`
}

// Directory is the content of the lab's LDAP directory.
type Directory struct {
	BaseDN  string           `json:"base_dn"`
	Servers []string         `json:"servers"`
	BindDN  string           `json:"bind_dn"`
	OUs     []string         `json:"ous"`
	Users   []DirectoryUser  `json:"users"`
	Groups  []DirectoryGroup `json:"groups"`
}

// DirectoryUser is an inetOrgPerson/posixAccount entry.
type DirectoryUser struct {
	DN         string   `json:"dn"`
	UID        string   `json:"uid"`
	CN         string   `json:"cn"`
	Mail       string   `json:"mail"`
	Department string   `json:"department"`
	Title      string   `json:"title"`
	UIDNumber  int      `json:"uid_number"`
	MemberOf   []string `json:"member_of"`
}

// DirectoryGroup is a groupOfNames entry.
type DirectoryGroup struct {
	DN      string   `json:"dn"`
	CN      string   `json:"cn"`
	Members []string `json:"members"`
}

// Host returns the manifest entry for ip.
func (m Manifest) Host(ip string) (Host, bool) {
	for _, h := range m.Hosts {
		if h.IP == ip {
			return h, true
		}
	}
	return Host{}, false
}

// ByClass returns the hosts of one class, in address order.
func (m Manifest) ByClass(class string) []Host {
	var out []Host
	for _, h := range m.Hosts {
		if h.Class == class {
			out = append(out, h)
		}
	}
	return out
}

// WriteFile writes the manifest as indented JSON. The file appears
// atomically (temp file + rename), so a reader polling for it never sees half
// a manifest.
func (m Manifest) WriteFile(path string) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("lab manifest: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".lab-manifest-*")
	if err != nil {
		return fmt.Errorf("lab manifest: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil {
		os.Remove(tmp)
		return fmt.Errorf("lab manifest %s: write: %w", path, errors.Join(werr, cerr))
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lab manifest: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("lab manifest: %w", err)
	}
	return nil
}

// StoreCredential is one distinct credential of the lab in the shape of Outpost's
// credential store (outpost credentials add): what a demo or a benchmark registers.
type StoreCredential struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"` // ssh, snmp, snmpv3, ldap, winrm
	Username string            `json:"username,omitempty"`
	Secret   string            `json:"secret"`
	Fields   map[string]string `json:"fields,omitempty"`
}

// StoreCredentials lists every distinct credential of the manifest, named
// <prefix>-<type>-<n> in the order hosts use them.
func (m Manifest) StoreCredentials(prefix string) []StoreCredential {
	type key struct{ typ, user, secret string }
	seen := map[key]bool{}
	var out []StoreCredential
	add := func(k key, fields map[string]string) {
		if k.secret == "" || seen[k] {
			return
		}
		seen[k] = true
		out = append(out, StoreCredential{Name: fmt.Sprintf("%s-%s-%d", prefix, k.typ, len(out)+1), Type: k.typ,
			Username: k.user, Secret: k.secret, Fields: fields})
	}
	for _, h := range m.Hosts {
		c := h.Credentials
		if c.SSH != nil {
			add(key{"ssh", c.SSH.Username, c.SSH.Password}, nil)
		}
		if c.SNMP != nil {
			add(key{"snmp", "", c.SNMP.Community}, nil)
			if c.SNMP.Username != "" {
				add(key{"snmpv3", c.SNMP.Username, c.SNMP.AuthPassword}, map[string]string{"auth_protocol": c.SNMP.AuthProtocol,
					"priv_protocol": c.SNMP.PrivProtocol, "priv_password": c.SNMP.PrivPassword})
			}
		}
		if c.LDAP != nil {
			add(key{"ldap", c.LDAP.BindDN, c.LDAP.Password}, nil)
		}
		if c.WinRM != nil {
			add(key{"winrm", c.WinRM.Username, c.WinRM.Password}, nil)
		}
	}
	return out
}
