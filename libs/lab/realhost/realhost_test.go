package realhost_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/outpost-dev/outpost/libs/lab/realhost"
)

func TestRealHost(t *testing.T) {
	if err := (realhost.Config{Addr: "10.0.0.1:22", User: "u"}).Validate(); err == nil || !strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "password") {
		t.Errorf("a non-loopback address without a password: %v, want both refused", err)
	}
	h, err := realhost.Start(realhost.Config{Addr: "127.0.0.1:0", User: "ops", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	addr := h.Addr()
	if _, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "ops", Auth: []ssh.AuthMethod{ssh.Password("wrong")}, HostKeyCallback: ssh.InsecureIgnoreHostKey()}); err == nil {
		t.Fatal("a wrong password logged in")
	}
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "ops", Auth: []ssh.AuthMethod{ssh.Password("s3cret")}, HostKeyCallback: ssh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := t.TempDir()
	for _, f := range []string{"a.conf", "b.conf"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("file "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host, _ := os.Hostname()
	for _, c2 := range []struct {
		cmd    string
		status int
		out    string // stdout holds it
		errOut string // stderr holds it
	}{
		{"hostname", 0, host, ""},
		{"cat " + dir + "/*.conf", 0, "file a.conf\nfile b.conf\n", ""},
		{"cat " + dir + "/*.none", 1, "", "No such file"},
		{"rm -rf " + dir, 127, "", "not one of the commands"},
		{"cat /etc/hostname; rm x", 2, "", "refused"},
		{"cat $(echo /etc/shadow)", 2, "", "refused"},
		// single quotes are literal (no glob), a pipe runs one listed command into another
		{"cat " + dir + "/*.conf | grep -F -e 'file b' -e 'nothing'", 0, "file b.conf\n", ""},
		{"cat '" + dir + "/*.conf'", 1, "", "No such file"},
		{"cat " + dir + "/a.conf | grep -F 'no such line'", 1, "", ""},
		{"cat " + dir + "/a.conf | rm x", 127, "", "not one of the commands"},
		{"cat " + dir + "/a.conf || rm x", 2, "", "refused"},
		{"cat " + dir + "/a.conf |", 2, "", "refused"},
		{"grep 'unterminated", 2, "", "refused"},
		{"cat (x)", 2, "", "refused"},
	} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		s.Stdout, s.Stderr = &stdout, &stderr
		err = s.Run(c2.cmd)
		status := 0
		var ee *ssh.ExitError
		if errors.As(err, &ee) {
			status = ee.ExitStatus()
		} else if err != nil {
			t.Fatalf("%s: %v", c2.cmd, err)
		}
		if status != c2.status || !strings.Contains(stdout.String(), c2.out) || !strings.Contains(stderr.String(), c2.errOut) {
			t.Errorf("%s: status %d stdout %q stderr %q; want %d, %q, %q", c2.cmd, status, stdout.String(), stderr.String(), c2.status, c2.out, c2.errOut)
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the refused rm ran: %v", err)
	}
	if n := len(h.Execs()); n != 14 {
		t.Errorf("%d execs recorded, want 14", n)
	}
}
