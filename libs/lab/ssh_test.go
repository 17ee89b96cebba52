package lab_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"golang.org/x/crypto/ssh"
)

type sshResult struct {
	stdout, stderr string
	status         int
}

func sshClient(t *testing.T, h lab.Host, auth ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	if auth == nil {
		auth = []ssh.AuthMethod{ssh.Password(h.Credentials.SSH.Password)}
	}
	user := "nobody"
	if h.Credentials.SSH != nil {
		user = h.Credentials.SSH.Username
	}
	return ssh.Dial("tcp", net.JoinHostPort(h.IP, "22"), &ssh.ClientConfig{
		User: user,
		Auth: auth,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != h.SSHHostKey {
				return fmt.Errorf("host key %s, manifest says %s", got, h.SSHHostKey)
			}
			return nil
		},
		Timeout: 5 * time.Second,
	})
}

func sshRun(t *testing.T, c *ssh.Client, cmd string) sshResult {
	t.Helper()
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var o, e bytes.Buffer
	s.Stdout, s.Stderr = &o, &e
	err = s.Run(cmd)
	status := 0
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitStatus()
	case err != nil:
		t.Fatalf("%q: %v", cmd, err)
	}
	return sshResult{o.String(), e.String(), status}
}

func TestSSHLinuxServers(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.202.0/24", 60)
	m := l.Manifest()
	families := map[string]bool{}
	for _, h := range m.ByClass(lab.ClassLinux) {
		family := "deb"
		if strings.Contains(h.OS, "Red Hat") || strings.Contains(h.OS, "Rocky") {
			family = "rpm"
		}
		if families[family] {
			continue // one host of each family is enough here; the command table has its own tests
		}
		families[family] = true
		t.Run(h.Name, func(t *testing.T) {
			c, err := sshClient(t, h)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if v := string(c.ServerVersion()); v != h.SSHVersion {
				t.Errorf("server version %q, manifest %q", v, h.SSHVersion)
			}
			if r := sshRun(t, c, "uname -a"); r.status != 0 || !strings.HasPrefix(r.stdout, "Linux "+h.Name+" "+h.Kernel+" ") {
				t.Errorf("uname -a: %+v", r)
			}
			if r := sshRun(t, c, "cat /etc/os-release"); !strings.Contains(r.stdout, "VERSION_ID=\""+h.OSVersion+"\"") || !strings.Contains(r.stdout, "NAME=\""+h.OS+"\"") {
				t.Errorf("os-release: %+v", r)
			}
			if r := sshRun(t, c, "cat /sys/class/dmi/id/product_serial"); r.stdout != h.Serial+"\n" {
				t.Errorf("serial %q, manifest %q", r.stdout, h.Serial)
			}
			pk := `dpkg-query -W -f='${Package} ${Version}\n'`
			if family == "rpm" {
				pk = `rpm -qa --qf '%{NAME} %{VERSION}-%{RELEASE}\n'`
			}
			r := sshRun(t, c, pk)
			var want strings.Builder
			for _, s := range h.Software {
				want.WriteString(s.Name + " " + s.Version + "\n")
			}
			if r.stdout != want.String() {
				t.Errorf("%s:\n%s\nmanifest:\n%s", pk, r.stdout, want.String())
			}
			if r := sshRun(t, c, "definitely-not-a-command -v"); r.status != 127 || r.stderr != "bash: definitely-not-a-command: command not found\n" {
				t.Errorf("unknown command: %+v", r)
			}
			if r := sshRun(t, c, "seq 1 200000 | wc -l"); r.stdout != "200000\n" {
				t.Errorf("pipeline: %+v", r)
			}
		})
	}
	if len(families) != 2 {
		t.Fatalf("want deb and rpm hosts, got %v", families)
	}
}

func TestSSHAuthentication(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	signer, _ := ssh.NewSignerFromKey(priv)
	l := startLab(t, "127.77.208.0/24", 60, func(c *lab.Config) { c.AuthorizedKeys = []ssh.PublicKey{sshPub} })
	h := l.Manifest().ByClass(lab.ClassLinux)[0]
	if _, err := sshClient(t, h, ssh.Password("wrong")); err == nil {
		t.Error("a wrong password logged in")
	}
	c, err := sshClient(t, h, ssh.PublicKeys(signer))
	if err != nil {
		t.Fatalf("public key: %v", err)
	}
	c.Close()
	_, other, _ := ed25519.GenerateKey(nil)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	if _, err := sshClient(t, h, ssh.PublicKeys(otherSigner)); err == nil {
		t.Error("an unknown key logged in")
	}
	// network gear with SSH shows its banner but lets nobody in
	for _, g := range l.Manifest().Hosts {
		if isGear(g) && g.SSHHostKey != "" {
			g.Credentials.SSH = &lab.SSHCredential{Username: "admin", Password: "admin"}
			if _, err := sshClient(t, g); err == nil {
				t.Errorf("%s: logged into network gear", g.IP)
			}
			break
		}
	}
}

// A command that runs long stops when the client goes, and Close does not wait for it.
func TestSSHCancellation(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.207.0/24", 30)
	h := l.Manifest().ByClass(lab.ClassLinux)[0]
	c, err := sshClient(t, h)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.NewSession()
	if err := s.Start("sleep 600"); err != nil {
		t.Fatal(err)
	}
	s2, _ := c.NewSession()
	var out countWriter
	s2.Stdout = &out
	if err := s2.Start("yes"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for out.n() < 1<<20 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if out.n() < 1<<20 {
		t.Fatalf("yes produced only %d bytes", out.n())
	}
	t0 := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err == nil {
		t.Error("sleep 600 finished normally after Close")
	}
	s2.Wait()
	c.Close()
	t.Logf("Close with running commands took %v", time.Since(t0))
}

type countWriter struct {
	mu    sync.Mutex
	count int
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.count += len(p)
	w.mu.Unlock()
	return len(p), nil
}

func (w *countWriter) n() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// The SSH servers count what they execute, per host and command, and the most exec
// sessions that ran at once: a test of "exactly once" or "never more than N" reads them.
func TestSSHExecCounters(t *testing.T) {
	t.Parallel()
	l := startLab(t, "127.77.210.0/24", 24)
	h := l.Manifest().ByClass(lab.ClassLinux)[0]
	c, err := sshClient(t, h)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sshRun(t, c, "echo one")
	sshRun(t, c, "echo one")
	sshRun(t, c, "echo two")
	if n, m, o := l.Execs(h.IP, "echo one"), l.Execs(h.IP, "echo two"), l.Execs("127.77.210.250", "echo one"); n != 2 || m != 1 || o != 0 {
		t.Fatalf("execs: %d, %d, %d; want 2, 1, 0", n, m, o)
	}
	l.ResetExecPeak()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { sshRun(t, c, "sleep 1") })
	}
	wg.Wait()
	if now, peak := l.ExecConcurrency(); now != 0 || peak != 3 {
		t.Fatalf("exec sessions: %d now, peak %d; want 0 and 3", now, peak)
	}
}
