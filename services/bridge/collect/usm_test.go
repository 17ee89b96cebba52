package collect

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
)

// SNMPv3: a linkDown trap and an inform from USM users of the config (authPriv SHA/AES and
// authNoPriv SHA256) become events; a trap with a wrong passphrase or an unknown user is
// counted as unreadable; net-snmp's snmptrap (when installed) reaches it too.
func TestTrapsV3(t *testing.T) {
	users := []TrapUser{{Name: "ops", Auth: "SHA", AuthPass: "auth-secret-1", Priv: "AES", PrivPass: "priv-secret-1"},
		{Name: "mon", Auth: "SHA256", AuthPass: "auth-secret-2"}}
	c, sink := start(t, Config{Traps: "127.0.0.1:0", TrapUsers: users})
	addr := c.Addrs["trap"].(*net.UDPAddr)
	linkDown := gosnmp.SnmpTrap{Variables: []gosnmp.SnmpPDU{
		{Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(100)},
		{Name: ".1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: ".1.3.6.1.6.3.1.1.5.3"},
		{Name: ".1.3.6.1.2.1.2.2.1.1.4", Type: gosnmp.Integer, Value: 4},
	}}
	client := func(u TrapUser, engine string) *gosnmp.GoSNMP {
		g := &gosnmp.GoSNMP{Target: "127.0.0.1", Port: uint16(addr.Port), Version: gosnmp.Version3, SecurityModel: gosnmp.UserSecurityModel,
			MsgFlags: u.flags(), SecurityParameters: u.params(engine), Timeout: 2 * time.Second, Retries: 2, MaxOids: gosnmp.MaxOids}
		if err := g.Connect(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Conn.Close() })
		return g
	}
	// a trap: the sender is the authoritative engine
	if _, err := client(users[0], "\x80\x00\x1f\x88\x04sw-1-engine").SendTrap(linkDown); err != nil {
		t.Fatal(err)
	}
	evs := waitEvents(t, sink, 1)
	if ev := evs[0]; ev.Type != "link" || ev.Severity != api.SeverityMajor || ev.Resource != "ifIndex 4" || ev.Fields["snmp_version"] != "3" {
		t.Fatalf("v3 trap event %s fields %v", describe(evs), ev.Fields)
	}
	// an inform: the collector is the authoritative engine; the sender discovers its ID
	inf := linkDown
	inf.IsInform = true
	inf.Variables = append([]gosnmp.SnmpPDU(nil), linkDown.Variables...)
	inf.Variables[1].Value = ".1.3.6.1.6.3.1.1.5.1" // coldStart
	engine, _ := engineID("", "dc1")
	if _, err := client(users[1], engine).SendTrap(inf); err != nil {
		t.Fatalf("inform not answered: %v", err)
	}
	evs = waitEvents(t, sink, 2)
	if ev := evs[1]; ev.Type != "restart" || !strings.Contains(ev.Message, "coldStart") {
		t.Fatalf("v3 inform event %s", describe(evs))
	}

	// v2c still works beside the users
	g := &gosnmp.GoSNMP{Target: "127.0.0.1", Port: uint16(addr.Port), Community: "public", Version: gosnmp.Version2c,
		Timeout: 2 * time.Second, MaxOids: gosnmp.MaxOids}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Conn.Close()
	if _, err := g.SendTrap(linkDown); err != nil {
		t.Fatal(err)
	}
	evs = waitEvents(t, sink, 3)
	if ev := evs[2]; ev.Fields["snmp_version"] != "2c" || ev.Type != "link" {
		t.Fatalf("v2c trap beside v3 users: %s", describe(evs))
	}

	// a wrong passphrase and an unknown user: counted, not events
	bad := users[0]
	bad.AuthPass = "not-the-secret"
	_, _ = client(bad, "\x80\x00\x1f\x88\x04sw-2-engine").SendTrap(linkDown)
	_, _ = client(TrapUser{Name: "nobody", Auth: "SHA", AuthPass: "whatever-1"}, "\x80\x00\x1f\x88\x04sw-3-engine").SendTrap(linkDown)
	eventually(t, 10*time.Second, func() error {
		if got := c.Counts()[api.SourceTrap]; got.Rejected != 2 || got.Accepted != 3 {
			return fmt.Errorf("counts %+v, want 3 accepted and 2 rejected", got)
		}
		return nil
	})
	_, rejects := sink.snapshot()
	for _, r := range rejects {
		if strings.Contains(r, "not-the-secret") || strings.Contains(r, "auth-secret") {
			t.Errorf("a passphrase in a reject: %q", r)
		}
	}

	// net-snmp's snmptrap, the user's credentials in a config file (not argv)
	bin, err := exec.LookPath("snmptrap")
	if err != nil {
		t.Log("snmptrap not installed: the net-snmp sender is not tried")
		return
	}
	dir := t.TempDir()
	conf := "defSecurityName ops\ndefSecurityLevel authPriv\ndefAuthType SHA\ndefAuthPassphrase auth-secret-1\ndefPrivType AES\ndefPrivPassphrase priv-secret-1\n"
	if err := os.WriteFile(filepath.Join(dir, "snmp.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-v3", "-e", "0x8000000001020304", fmt.Sprintf("udp:127.0.0.1:%d", addr.Port), "", ".1.3.6.1.6.3.1.1.5.3",
		".1.3.6.1.2.1.2.2.1.1.9", "i", "9")
	cmd.Env = append(os.Environ(), "SNMPCONFPATH="+dir, "HOME="+dir, "MIBS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("snmptrap: %v\n%s", err, out)
	}
	evs = waitEvents(t, sink, 4)
	if ev := evs[3]; ev.Type != "link" || ev.Resource != "ifIndex 9" {
		t.Fatalf("net-snmp v3 trap event %s", describe(evs))
	}
}

func TestTrapUsersValidate(t *testing.T) {
	err := Config{Traps: "127.0.0.1:0", TrapEngineID: "zz", TrapUsers: []TrapUser{{Name: "a", Auth: "SHA1x", AuthPass: "short"},
		{Name: "", Priv: "AES", PrivPass: "priv-secret"}}}.Validate()
	for _, want := range []string{`trap_users[0] ("a"): auth "SHA1x"`, "auth_pass: at least 8", `trap_users[1] (""): user is empty`, "priv needs auth", "trap_engine_id"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v\nwant it to say %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "priv-secret") {
		t.Errorf("a passphrase in an error: %v", err)
	}
}
