package banner

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in   string
		want Info
	}{
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", Info{Service: "ssh", Product: "OpenSSH", Version: "9.2p1", Extra: "Debian-2+deb12u3"}},
		{"SSH-2.0-Cisco-1.25\r\n", Info{Service: "ssh", Product: "Cisco", Version: "1.25"}},
		{"SSH-1.99-dropbear_2022.83\r\n", Info{Service: "ssh", Product: "dropbear", Version: "2022.83"}},
		{"220 mx1.example.com ESMTP Postfix (Debian/GNU)\r\n", Info{Service: "smtp", Product: "Postfix", Extra: "mx1.example.com ESMTP Postfix (Debian/GNU)"}},
		{"220 (vsFTPd 3.0.5)\r\n", Info{Service: "ftp", Product: "vsFTPd", Version: "3.0.5", Extra: "(vsFTPd 3.0.5)"}},
		{"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0 (Ubuntu)\r\n\r\n", Info{Service: "http", Product: "nginx", Version: "1.24.0", Extra: "(Ubuntu)"}},
		{"HTTP/1.0 404 Not Found\r\nServer: Microsoft-HTTPAPI/2.0\r\n", Info{Service: "http", Product: "Microsoft-HTTPAPI", Version: "2.0"}},
		{"\xff\xfb\x01\xff\xfb\x03\xff\xfd\x18\xff\xfd\x1f\r\n\r\nUser Access Verification\r\n\r\nUsername: ", Info{Service: "telnet", Product: "Cisco IOS", Extra: "User Access Verification"}},
		{"\x4a\x00\x00\x00\x0a8.0.36\x00\x01\x00\x00\x00", Info{Service: "mysql", Product: "MySQL", Version: "8.0.36"}},
		{"\x4a\x00\x00\x00\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\x00\x01", Info{Service: "mysql", Product: "MariaDB", Version: "10.11.6", Extra: "10.11.6-MariaDB-0+deb12u1"}},
		{"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00", Info{Service: "rdp"}},
		{"RFB 003.008\n", Info{Service: "vnc", Version: "003.008"}},
		{"+OK Dovecot ready.\r\n", Info{Service: "pop3", Extra: "Dovecot ready."}},
		{"* OK [CAPABILITY IMAP4rev1] Dovecot ready.\r\n", Info{Service: "imap", Product: "Dovecot", Extra: "[CAPABILITY IMAP4rev1] Dovecot ready."}},
		{"@PJL INFO ID\r\n\"HP LaserJet M507\"\r\n\f", Info{Service: "jetdirect", Extra: "HP LaserJet M507"}},
		{"", Info{}},
		{"\x00\x01garbage", Info{}},
	}
	for _, c := range cases {
		if got := Parse([]byte(c.in)); got != c.want {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", c.in, got, c.want)
		}
	}
}

func TestEscape(t *testing.T) {
	if got := escape([]byte("ab\r\n\x00\xff\\é"), 100); got != `ab\r\n\x00\xff\\é` {
		t.Errorf("escape: %s", got)
	}
}

// FuzzParse: whatever a port says, identification never panics and only yields short,
// valid UTF-8 fields.
func FuzzParse(f *testing.F) {
	f.Add([]byte("SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := Parse(b)
		for _, s := range []string{in.Service, in.Product, in.Version, in.Extra} {
			if !utf8.ValidString(s) || len(s) > maxField+utf8.UTFMax || strings.ContainsAny(s, "\x00\r\n") {
				t.Fatalf("bad field %q from %q", s, b)
			}
		}
		e := escape(b, 2048)
		if !utf8.ValidString(e) || strings.ContainsAny(e, "\x00\r\n") {
			t.Fatalf("escape(%q) = %q", b, e)
		}
	})
}
