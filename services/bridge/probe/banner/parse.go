package banner

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	contract "github.com/outpost-dev/outpost/libs/probes/banner"
)

// The contract of the kind (libs/probes/banner): what a probe asks and what it answers.
type (
	Info = contract.Info
)

const maxField = 128

var (
	reVersion = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9 _.+-]*?[/ _-]v?([0-9][0-9A-Za-z.+~:-]*)`)
	reSSHProd = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9.+-]*?)[_-]v?([0-9][0-9A-Za-z.+~-]*)$`)
)

// Parse identifies a service from the first bytes it sent (or answered to a probe).
// It never fails: an unknown banner gives an empty Info.
func Parse(b []byte) Info {
	if len(b) == 0 {
		return Info{}
	}
	switch {
	case bytes.HasPrefix(b, []byte("SSH-")):
		return ssh(firstLine(b))
	case bytes.HasPrefix(b, []byte("HTTP/")):
		return httpInfo(b)
	case b[0] == 0xff && len(b) > 2 && b[1] >= 251 && b[1] <= 254:
		return telnet(b)
	case len(b) >= 5 && b[3] == 0 && (b[4] == 10 || b[4] == 0xff):
		if in, ok := mysql(b); ok {
			return in
		}
	case len(b) >= 7 && b[0] == 3 && b[1] == 0 && b[5]&0xf0 == 0xd0:
		return Info{Service: "rdp"}
	case bytes.HasPrefix(b, []byte("RFB ")):
		return Info{Service: "vnc", Version: field(strings.TrimPrefix(firstLine(b), "RFB "))}
	case bytes.HasPrefix(b, []byte("@PJL")):
		return Info{Service: "jetdirect", Extra: field(pjlID(b))}
	case bytes.HasPrefix(b, []byte("+OK")):
		return Info{Service: "pop3", Extra: field(strings.TrimSpace(strings.TrimPrefix(firstLine(b), "+OK")))}
	case bytes.HasPrefix(b, []byte("* OK")):
		return imap(firstLine(b))
	case bytes.HasPrefix(b, []byte("220")):
		return greeting220(firstLine(b))
	}
	return Info{}
}

// firstLine is the first line as valid UTF-8 without control characters.
func firstLine(b []byte) string {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		b = b[:i]
	}
	return printable(b, 512)
}

// printable keeps printable UTF-8 and drops the rest, at most n bytes.
func printable(b []byte, n int) string {
	var sb strings.Builder
	for len(b) > 0 && sb.Len() < n {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			continue
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

func field(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxField {
		s = strings.ToValidUTF8(s[:maxField], "")
	}
	return s
}

// ssh reads "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3".
func ssh(line string) Info {
	in := Info{Service: "ssh"}
	rest := line[4:]
	_, soft, ok := strings.Cut(rest, "-") // protocol version
	if !ok {
		return in
	}
	soft, comment, _ := strings.Cut(soft, " ")
	in.Extra = field(comment)
	if m := reSSHProd.FindStringSubmatch(soft); m != nil {
		in.Product, in.Version = field(m[1]), field(m[2])
	} else {
		in.Product = field(soft)
	}
	return in
}

func httpInfo(b []byte) Info {
	in := Info{Service: "http"}
	for _, line := range strings.Split(printableLines(b, 8192), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), "server") {
			in.Product, in.Version, in.Extra = productVersion(strings.TrimSpace(v))
			break
		}
	}
	return in
}

// printableLines keeps lines (split on \n) of printable text.
func printableLines(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	lines := bytes.Split(b, []byte("\n"))
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		out = append(out, printable(l, n))
	}
	return strings.Join(out, "\n")
}

// productVersion splits "nginx/1.24.0 (Ubuntu)" into nginx, 1.24.0, (Ubuntu).
func productVersion(s string) (string, string, string) {
	s = field(s)
	if s == "" {
		return "", "", ""
	}
	word, extra, _ := strings.Cut(s, " ")
	if p, v, ok := strings.Cut(word, "/"); ok {
		return field(p), field(v), field(extra)
	}
	return field(word), "", field(extra)
}

func telnet(b []byte) Info {
	in := Info{Service: "telnet"}
	// skip IAC negotiations, keep the text
	var text []byte
	for i := 0; i < len(b); i++ {
		if b[i] == 0xff && i+1 < len(b) {
			switch c := b[i+1]; {
			case c >= 251 && c <= 254:
				i += 2
			case c == 250:
				j := bytes.Index(b[i:], []byte{0xff, 240})
				if j < 0 {
					i = len(b)
				} else {
					i += j + 1
				}
			default:
				i++
			}
			continue
		}
		text = append(text, b[i])
	}
	t := strings.TrimSpace(printableLines(text, 2048))
	if strings.Contains(t, "User Access Verification") {
		in.Product = "Cisco IOS"
	}
	if l, _, _ := strings.Cut(t, "\n"); l != "" {
		in.Extra = field(l)
	}
	return in
}

// mysql reads the server greeting (protocol 10) or an error packet.
func mysql(b []byte) (Info, bool) {
	n := int(b[0]) | int(b[1])<<8 | int(b[2])<<16
	if n < 1 || n > 1<<16 {
		return Info{}, false
	}
	body := b[4:]
	if len(body) > n {
		body = body[:n]
	}
	if body[0] == 0xff {
		msg := ""
		if len(body) > 3 {
			msg = printable(body[3:], 256)
		}
		return Info{Service: "mysql", Extra: field(msg)}, true
	}
	end := bytes.IndexByte(body[1:], 0)
	if end <= 0 {
		return Info{}, false
	}
	ver := printable(body[1:1+end], 128)
	in := Info{Service: "mysql", Product: "MySQL", Version: field(ver)}
	if strings.HasPrefix(ver, "5.5.5-") {
		ver = strings.TrimPrefix(ver, "5.5.5-")
		in.Version = field(ver)
	}
	if strings.Contains(strings.ToLower(ver), "mariadb") {
		in.Product = "MariaDB"
		v, _, _ := strings.Cut(ver, "-")
		in.Version, in.Extra = field(v), field(ver)
	}
	return in, true
}

func imap(line string) Info {
	in := Info{Service: "imap", Extra: field(strings.TrimSpace(strings.TrimPrefix(line, "* OK")))}
	for _, p := range []string{"Dovecot", "Cyrus", "Courier", "Microsoft Exchange"} {
		if strings.Contains(line, p) {
			in.Product = p
		}
	}
	return in
}

// greeting220 tells SMTP from FTP: "220 mx.example.com ESMTP Postfix", "220 (vsFTPd 3.0.5)".
func greeting220(line string) Info {
	rest := strings.TrimSpace(strings.TrimLeft(line[3:], "- "))
	up := strings.ToUpper(rest)
	in := Info{Extra: field(rest)}
	switch {
	case strings.Contains(up, "SMTP") || strings.Contains(up, "POSTFIX") || strings.Contains(up, "EXIM") || strings.Contains(up, "SENDMAIL"):
		in.Service = "smtp"
		for _, p := range []string{"Postfix", "Exim", "Sendmail", "Microsoft ESMTP MAIL Service", "OpenSMTPD"} {
			if strings.Contains(rest, p) {
				in.Product = p
				if m := reVersion.FindStringSubmatch(rest[strings.Index(rest, p):]); m != nil {
					in.Version = field(m[1])
				}
			}
		}
	case strings.Contains(up, "FTP"):
		in.Service = "ftp"
		for _, p := range []string{"vsFTPd", "ProFTPD", "Pure-FTPd", "FileZilla Server", "Microsoft FTP Service"} {
			if i := strings.Index(rest, p); i >= 0 {
				in.Product = p
				if m := reVersion.FindStringSubmatch(rest[i:]); m != nil {
					in.Version = field(m[1])
				}
			}
		}
	default:
		in.Service = "smtp" // a bare 220 greeting is SMTP far more often than FTP
	}
	return in
}

func pjlID(b []byte) string {
	lines := strings.Split(printableLines(b, 1024), "\n")
	if len(lines) > 1 {
		s := strings.TrimSpace(lines[1])
		if u, err := strconv.Unquote(s); err == nil {
			return u
		}
		return strings.Trim(s, `"`)
	}
	return ""
}
