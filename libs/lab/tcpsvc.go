package lab

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Plain TCP services: Windows ports, printers, databases' greetings, telnet
// on network gear, and the hostile hosts.

func (l *Lab) tcpHandler(h *host, s service) func(net.Conn) {
	switch s.kind {
	case svcSSH:
		return func(c net.Conn) { l.serveSSH(c, h) }
	case svcLDAP:
		return func(c net.Conn) { l.serveLDAP(c, h, false) }
	case svcLDAPS:
		return func(c net.Conn) {
			tc := tls.Server(c, l.tlsCfg)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.Handshake() != nil {
				return
			}
			tc.SetDeadline(time.Time{})
			l.serveLDAP(tc, h, true)
		}
	case svcIdle:
		return idle
	case svcRDP:
		return rdp
	case svcJetDirect:
		return func(c net.Conn) { jetDirect(c, h) }
	case svcTelnet:
		return telnet
	case svcMySQL:
		return func(c net.Conn) { mysql(c, s.app) }
	case svcPostgres:
		return postgres
	case svcHostile:
		return func(c net.Conn) { l.hostileTCP(c, h.hostile) }
	}
	return idle
}

// idle accepts and reads until the client goes away (msrpc, smb: they wait
// for the client to speak a protocol we do not simulate).
func idle(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(idleTimeout))
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// rdp answers an X.224 Connection Request with a Connection Confirm that
// selects CredSSP (what Windows Server with NLA does), then waits.
func rdp(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(idleTimeout))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c, hdr); err != nil || hdr[0] != 3 {
		return
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n < 4 || n > 4096 {
		return
	}
	if _, err := io.ReadFull(c, make([]byte, n-4)); err != nil {
		return
	}
	// TPKT + X.224 CC + RDP_NEG_RSP(PROTOCOL_HYBRID)
	c.Write([]byte{0x03, 0x00, 0x00, 0x13, 0x0e, 0xd0, 0x00, 0x00, 0x12, 0x34, 0x00, 0x02, 0x1f, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00})
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// jetDirect reads print jobs and answers PJL identification.
func jetDirect(c net.Conn, h *host) {
	r := bufio.NewReader(io.LimitReader(c, 64<<20))
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		line, err := r.ReadString('\n')
		if strings.Contains(line, "@PJL INFO ID") {
			fmt.Fprintf(c, "@PJL INFO ID\r\n\"%s\"\r\n\f", h.gear.model.model)
		}
		if err != nil {
			return
		}
	}
}

// telnet is a Cisco-style login prompt that never lets anyone in.
func telnet(c net.Conn) {
	c.Write([]byte{255, 251, 1, 255, 251, 3, 255, 253, 24, 255, 253, 31})
	io.WriteString(c, "\r\n\r\nUser Access Verification\r\n\r\nUsername: ")
	r := bufio.NewReader(c)
	for try := 0; try < 3; try++ {
		for _, prompt := range []string{"Password: ", ""} {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := readTelnetLine(r); err != nil {
				return
			}
			if prompt != "" {
				io.WriteString(c, "\r\n"+prompt)
			}
		}
		io.WriteString(c, "\r\n% Authentication failed\r\n\r\n")
		if try < 2 {
			io.WriteString(c, "Username: ")
		}
	}
}

func readTelnetLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		switch {
		case c == 255: // IAC: skip the command and its option
			cmd, _ := r.ReadByte()
			if cmd >= 251 && cmd <= 254 {
				r.ReadByte()
			} else if cmd == 250 { // sub-negotiation until IAC SE
				for {
					x, err := r.ReadByte()
					if err != nil {
						return "", err
					}
					if x == 255 {
						if y, _ := r.ReadByte(); y == 240 {
							break
						}
					}
				}
			}
		case c == '\r' || c == '\n':
			if len(b) > 0 || c == '\r' {
				return string(b), nil
			}
		case c == 0:
		default:
			b = append(b, c)
		}
	}
}

// mysql sends the server greeting (protocol 10) and refuses the login.
func mysql(c net.Conn, app *appInstance) {
	version := app.v.banner
	plugin := "caching_sha2_password"
	if app.v.name == "mariadb" {
		version = "5.5.5-" + version // MariaDB's compatibility prefix
		plugin = "mysql_native_password"
	}
	var p bytes.Buffer
	p.WriteByte(10)
	p.WriteString(version)
	p.WriteByte(0)
	binary.Write(&p, binary.LittleEndian, uint32(time.Now().UnixNano()&0xffff))
	p.WriteString("Lab:Salt")
	p.WriteByte(0)
	caps := uint32(0xdfffffff)
	binary.Write(&p, binary.LittleEndian, uint16(caps))
	p.WriteByte(0xff) // utf8mb4
	binary.Write(&p, binary.LittleEndian, uint16(2))
	binary.Write(&p, binary.LittleEndian, uint16(caps>>16))
	p.WriteByte(21)
	p.Write(make([]byte, 10))
	p.WriteString("ScrambleLab1")
	p.WriteByte(0)
	p.WriteString(plugin)
	p.WriteByte(0)
	writeMySQLPacket(c, 0, p.Bytes())
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	hdr := make([]byte, 4)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return
	}
	n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
	body := make([]byte, min(n, 1<<16))
	if _, err := io.ReadFull(c, body); err != nil {
		return
	}
	user := "?"
	if len(body) > 32 {
		if i := bytes.IndexByte(body[32:], 0); i >= 0 {
			user = string(body[32 : 32+i])
		}
	}
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	msg := fmt.Sprintf("Access denied for user '%s'@'%s' (using password: YES)", user, host)
	var e bytes.Buffer
	e.WriteByte(0xff)
	binary.Write(&e, binary.LittleEndian, uint16(1045))
	e.WriteString("#28000")
	e.WriteString(msg)
	writeMySQLPacket(c, hdr[3]+1, e.Bytes())
}

func writeMySQLPacket(w io.Writer, seq byte, body []byte) {
	hdr := []byte{byte(len(body)), byte(len(body) >> 8), byte(len(body) >> 16), seq}
	w.Write(append(hdr, body...))
}

// postgres declines TLS and GSS encryption, asks for SCRAM and rejects the
// password, as a server with scram-sha-256 in pg_hba.conf does.
func postgres(c net.Conn) {
	for {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		hdr := make([]byte, 8)
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		code := binary.BigEndian.Uint32(hdr[4:])
		if n < 8 || n > 10000 {
			return
		}
		rest := make([]byte, n-8)
		if _, err := io.ReadFull(c, rest); err != nil {
			return
		}
		switch code {
		case 80877103, 80877104: // SSLRequest, GSSENCRequest
			c.Write([]byte{'N'})
			continue
		case 80877102: // CancelRequest
			return
		}
		user := "?"
		params := bytes.Split(rest, []byte{0})
		for i := 0; i+1 < len(params); i += 2 {
			if string(params[i]) == "user" {
				user = string(params[i+1])
			}
		}
		// AuthenticationSASL: SCRAM-SHA-256
		mech := append([]byte("SCRAM-SHA-256"), 0, 0)
		msg := []byte{'R', 0, 0, 0, 0, 0, 0, 0, 10}
		binary.BigEndian.PutUint32(msg[1:], uint32(8+len(mech)))
		c.Write(append(msg, mech...))
		// read the client's SASLInitialResponse, then refuse
		t := make([]byte, 5)
		if _, err := io.ReadFull(c, t); err == nil {
			m := int(binary.BigEndian.Uint32(t[1:]))
			if m >= 4 && m < 10000 {
				io.ReadFull(c, make([]byte, m-4))
			}
		}
		var e bytes.Buffer
		for _, f := range []string{"SFATAL", "VFATAL", "C28P01", fmt.Sprintf("Mpassword authentication failed for user \"%s\"", user), "Fauth.c", "L326", "Rauth_failed"} {
			e.WriteString(f)
			e.WriteByte(0)
		}
		e.WriteByte(0)
		out := []byte{'E', 0, 0, 0, 0}
		binary.BigEndian.PutUint32(out[1:], uint32(4+e.Len()))
		c.Write(append(out, e.Bytes()...))
		return
	}
}

// hostileGreeting and hostileReply are what the wrong-protocol host says,
// whatever port it is asked on: an SMTP greeting, then to the first bytes
// the client sends an SMTP error and binary noise, then it hangs up. Line
// reading clients get whole (wrong) lines and an end, so nothing waits forever.
var (
	hostileGreeting = []byte("220 hostile.lab ESMTP Postfix\r\n")
	hostileReply    = []byte("500 5.5.2 Error: bad syntax\r\n\x00\xff\xfe\x13\x37GARBAGE\x7f\x80\x81\r\n")
)

func (l *Lab) hostileTCP(c net.Conn, mode string) {
	switch mode {
	case HostileStall:
		// never write, never close: wait for the client or the lab to go away
		io.Copy(io.Discard, c)
	case HostileWrongProtocol:
		c.Write(hostileGreeting)
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		if _, err := c.Read(make([]byte, 4096)); err != nil {
			return
		}
		c.Write(hostileReply)
	case HostileStream:
		l.goServe(func() { io.Copy(io.Discard, c) }) // ends when c is closed
		chunk := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\n"), 1024)
		for l.ctx.Err() == nil {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
	}
}

// hostileUDP answers SNMP datagrams the hostile way: silence, noise, or a flood.
func hostileUDP(mode string) func([]byte) [][]byte {
	return func([]byte) [][]byte {
		switch mode {
		case HostileWrongProtocol:
			return [][]byte{append(hostileGreeting[:len(hostileGreeting):len(hostileGreeting)], hostileReply...)}
		case HostileStream:
			out := make([][]byte, 32)
			for i := range out {
				out[i] = bytes.Repeat([]byte{0x30, 0x82, 0xff, 0xff}, 350)
			}
			return out
		}
		return nil
	}
}
