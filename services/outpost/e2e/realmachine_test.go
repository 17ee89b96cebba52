package e2e

// One real machine on two addresses: this machine's OpenSSH server (Debian's sshd) on one
// loopback address and its net-snmp agent (Debian's snmpd) on another, each started by the
// test with a configuration of its own, discovered through a real hub and bridge. The SNMP
// agent alone would make a Linux host of its address; SSH with a credential makes a
// linux_server of the other, with this machine's OS; the CMDB tells they are one machine by
// their adapters' MACs (`ip -o link` over SSH, ifTable over SNMP) and keeps one CI with both
// addresses, classified by the credentialed evidence.

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"golang.org/x/crypto/ssh"

	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

const (
	realSNMPAddr = "127.77.56.2" // snmpd, udp/161
	realSSHAddr  = "127.77.56.3" // sshd, tcp/22
	realRange    = "127.77.56.0/29"
)

// startRealSNMPd starts this machine's snmpd on ip:161 with only its own configuration (as
// services/discovery's TestRealNetSNMPAgentIsALinuxHost does) and waits until it answers.
func startRealSNMPd(t *testing.T, ip, community string) {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf("agentAddress udp:%s:161\nrocommunity %s 127.0.0.0/8\nsysServices 72\n", ip, community)
	if err := os.WriteFile(filepath.Join(dir, "snmpd.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -C: only this configuration; no MIB files are read (numeric OIDs only).
	cmd := exec.Command("/usr/sbin/snmpd", "-f", "-C", "-c", filepath.Join(dir, "snmpd.conf"), "-M", dir, "-m", "", "-Lf", filepath.Join(dir, "snmpd.log"))
	cmd.Env = append(os.Environ(), "SNMP_PERSISTENT_DIR="+dir, "MIBS=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "snmpd.log"))
			t.Logf("snmpd log:\n%s", b)
		}
	})
	g := &gosnmp.GoSNMP{Target: ip, Port: 161, Community: community, Version: gosnmp.Version2c, Timeout: time.Second, Retries: 0}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Conn.Close()
	eventually(t, time.Minute, func() error {
		_, err := g.Get([]string{"1.3.6.1.2.1.1.2.0"})
		if err != nil {
			return fmt.Errorf("snmpd on %s:161 does not answer: %v", ip, err)
		}
		return nil
	})
}

// startRealSSHd starts this machine's sshd in the foreground on ip:22 with a configuration
// of its own: a host key made for the test, root logging in with the test's key only, no
// password, no PAM. It returns the client's private key (OpenSSH PEM, encrypted with
// passphrase) and waits until the server answers.
func startRealSSHd(t *testing.T, ip, passphrase string) string {
	t.Helper()
	dir := t.TempDir()
	writeKey := func(name string, priv ed25519.PrivateKey, pass string) []byte {
		var blk *pem.Block
		var err error
		if pass == "" {
			blk, err = ssh.MarshalPrivateKey(priv, "")
		} else {
			blk, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte(pass))
		}
		if err != nil {
			t.Fatal(err)
		}
		b := pem.EncodeToMemory(blk)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		return b
	}
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	writeKey("host_key", hostPriv, "")
	clientPub, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	pemKey := writeKey("client_key", clientPriv, passphrase)
	sshPub, err := ssh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), ssh.MarshalAuthorizedKey(sshPub), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := strings.Join([]string{
		"ListenAddress " + ip + ":22",
		"HostKey " + filepath.Join(dir, "host_key"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"AllowUsers root",
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no", // the key files live in the test's temporary directory
		"LogLevel VERBOSE",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd's privilege separation directory (the package's service creates it at start)
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "sshd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "sshd.log"))
			t.Logf("sshd log:\n%s", b)
		}
	})
	eventually(t, time.Minute, func() error {
		c, err := net.DialTimeout("tcp", ip+":22", 2*time.Second)
		if err != nil {
			return fmt.Errorf("sshd on %s:22: %v", ip, err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "SSH-2.0-OpenSSH") {
			return fmt.Errorf("sshd on %s:22 greets %q (%v), want SSH-2.0-OpenSSH", ip, line, err)
		}
		return nil
	})
	return string(pemKey)
}

// osRelease reads a key of this machine's /etc/os-release.
func osRelease(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k == key {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// TestRealMachineOnTwoAddresses: this machine's snmpd on one address and its sshd on
// another, discovered with an SNMP community and an SSH key through a real bridge, are ONE
// linux_server CI with both addresses, this machine's OS name and version as
// /etc/os-release has them, classified by the credentialed SSH evidence.
func TestRealMachineOnTwoAddresses(t *testing.T) {
	for _, bin := range []string{"/usr/sbin/sshd", "/usr/sbin/snmpd"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("%s is not installed (apt-get install openssh-server snmpd; .ci/run installs them)", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd and snmpd listen on the privileged ports 22 and 161, and the test logs in as root")
	}
	t.Parallel()
	const community, passphrase = "real-m4chine-c0mmunity", "real-m4chine-k3y-pass"
	startRealSNMPd(t, realSNMPAddr, community)
	key := startRealSSHd(t, realSSHAddr, passphrase)

	h := startHub(t, t.TempDir())
	tok := h.addSite(t, "real", realRange, true)
	startBridge(t, h, "real", "real-br", tok)
	h.waitStatus(t, "real-br", "up")
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "real-snmp", "type": "snmp", "site": "real", "secret": community}, nil)
	h.mustAPI(t, "POST", "/api/v1/credentials", map[string]any{"name": "real-ssh-key", "type": "ssh", "site": "real",
		"username": "root", "secret": passphrase, "fields": map[string]string{"private_key": key}}, nil)

	id := startDiscovery(t, h, "real", realRange)
	r := waitDiscovery(t, h, id, 5*time.Minute)
	log := strings.Join(runLog(t, h, id), "\n")
	if r.State != "completed" {
		t.Fatalf("run %s: %s %s\n%s", id, r.State, r.Reason, log)
	}
	classes := map[string]string{}
	for _, hb := range r.Hosts {
		classes[hb.IP] = hb.Class
	}
	for _, ip := range []string{realSNMPAddr, realSSHAddr} {
		if classes[ip] != "linux_server" {
			t.Errorf("%s classified %q, want linux_server (hosts %v)\n%s", ip, classes[ip], classes, log)
		}
	}

	// ONE host CI: the two payloads merge by their adapters' MACs; wait for both receipts
	var servers []cmdbapi.CI
	var addrs map[string]bool
	eventually(t, 2*time.Minute, func() error {
		servers = nil
		for _, class := range []string{"server", "ip_switch", "ip_router", "network_gear"} {
			servers = append(servers, listCIs(t, h, class)...)
		}
		if len(servers) != 1 {
			var got []string
			for _, ci := range servers {
				got = append(got, fmt.Sprintf("%s %s %v (evidence %v)", ci.Class, ci.ID, ci.Attributes["ip_address"], ci.Attributes["class_evidence"]))
			}
			return fmt.Errorf("%d host CIs %v, want one linux_server for both addresses", len(servers), got)
		}
		var rel cmdbapi.RelResponse
		h.mustAPI(t, "GET", "/api/v1/cis/"+servers[0].ID+"/relations", nil, &rel)
		addrs = map[string]bool{}
		for _, x := range append(rel.Outgoing, rel.Incoming...) {
			if x.Peer.Class == "ip_address" {
				addrs[x.Peer.Name] = true
			}
		}
		if !addrs[realSNMPAddr] || !addrs[realSSHAddr] {
			return fmt.Errorf("%s %s has the addresses %v, want %s and %s", servers[0].Class, servers[0].ID, addrs, realSNMPAddr, realSSHAddr)
		}
		return nil
	})
	ci := servers[0]
	a := ci.Attributes
	if ci.Class != "linux_server" {
		t.Errorf("the machine is a %s, want linux_server (attributes %v)", ci.Class, a)
	}
	if want := osRelease(t, "VERSION_ID"); fmt.Sprint(a["os_version"]) != want {
		t.Errorf("os_version %v, want this machine's VERSION_ID %q", a["os_version"], want)
	}
	if want := osRelease(t, "NAME"); fmt.Sprint(a["os"]) != want {
		t.Errorf("os %v, want this machine's NAME %q (PRETTY_NAME %q)", a["os"], want, osRelease(t, "PRETTY_NAME"))
	}
	if a["class_evidence"] != "credentialed" || !strings.HasSuffix(fmt.Sprint(a["class_evidence_source"]), " on "+realSSHAddr) {
		t.Errorf("class evidence %v from %v, want credentialed from the SSH classification on %s", a["class_evidence"], a["class_evidence_source"], realSSHAddr)
	}
	if host, _ := os.Hostname(); a["name"] != host {
		t.Errorf("name %v, want this machine's hostname %q", a["name"], host)
	}
	t.Logf("%s %s: os %v %v, addresses %v, evidence %v (%v)", ci.Class, ci.ID, a["os"], a["os_version"], addrs, a["class_evidence"], a["class_evidence_source"])
}
