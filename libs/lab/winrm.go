package lab

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"golang.org/x/crypto/md4" //nolint:staticcheck // NTLM is built on MD4; nothing else uses it
)

// The WinRM listener of a windows_server, as Windows Server 2019/2022 answers on 5985 with
// AllowUnencrypted set: HTTP.sys (Server: Microsoft-HTTPAPI/2.0) serving /wsman, NTLM
// (under the Negotiate scheme) authenticating the connection, and the WS-Management shell
// protocol (MS-WSMV): Create a cmd shell, Command, Receive (base64 stdout/stderr streams,
// CommandState Done with the exit code), Send, Signal (terminate), Delete. Commands run in
// the lab's PowerShell and cmd interpreters (powershell.go).

// winrmConn is one client connection: NTLM authenticates it, as HTTP.sys does.
type winrmConn struct {
	mu        sync.Mutex
	challenge []byte // the server challenge of a handshake in progress
	user      string // authenticated user ("" = not yet)
}

type winrmConnKey struct{}

// winrmState is a host's open shells.
type winrmState struct {
	mu     sync.Mutex
	shells map[string]*winShell
}

type winShell struct {
	id   string
	cmds map[string]*winCommand
}

type winCommand struct {
	id     string
	cancel context.CancelFunc
	mu     sync.Mutex
	stdout []byte
	stderr []byte
	done   bool
	exit   int
	notify chan struct{} // closed and replaced whenever something changes
}

func (c *winCommand) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.notify
}

func (c *winCommand) changed() {
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *winCommand) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.stdout = append(c.stdout, p...)
	c.changed()
	c.mu.Unlock()
	return len(p), nil
}

// newWinRMServer is the HTTP server of every WinRM listener of the lab.
func (l *Lab) newWinRMServer() *http.Server {
	return &http.Server{
		Handler:           http.HandlerFunc(l.serveWinRM),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ConnContext: func(ctx context.Context, _ net.Conn) context.Context {
			return context.WithValue(ctx, winrmConnKey{}, &winrmConn{})
		},
		ErrorLog: l.http.ErrorLog,
	}
}

func (l *Lab) serveWinRM(w http.ResponseWriter, r *http.Request) {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	ap, _ := netip.ParseAddrPort(la.String())
	h := l.byIP[ap.Addr()]
	hdr := w.Header()
	hdr.Set("Server", "Microsoft-HTTPAPI/2.0")
	if h == nil || h.win == nil || !strings.EqualFold(r.URL.Path, "/wsman") || r.Method != http.MethodPost {
		hdr.Set("Content-Type", "text/html; charset=us-ascii")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">`+"\r\n"+
			`<HTML><HEAD><TITLE>Not Found</TITLE>`+"\r\n"+`<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>`+"\r\n"+
			`<BODY><h2>Not Found</h2>`+"\r\n"+`<hr><p>HTTP Error 404. The requested resource is not found.</p>`+"\r\n"+`</BODY></HTML>`+"\r\n")
		return
	}
	conn, _ := r.Context().Value(winrmConnKey{}).(*winrmConn)
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	if !l.winrmAuth(w, r, h, conn) {
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/soap+xml") {
		w.WriteHeader(http.StatusUnsupportedMediaType)
		return
	}
	l.winrmSOAP(w, r, h, body)
}

// unauthorized asks for credentials the way a workgroup server does.
func unauthorized(w http.ResponseWriter, h *host) {
	w.Header().Add("WWW-Authenticate", "Negotiate")
	if h.win.basic {
		w.Header().Add("WWW-Authenticate", `Basic realm="WSMAN"`)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusUnauthorized)
}

// winrmAuth authenticates a request (or its connection); false: the answer is written.
func (l *Lab) winrmAuth(w http.ResponseWriter, r *http.Request, h *host, conn *winrmConn) bool {
	conn.mu.Lock()
	defer conn.mu.Unlock()
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if conn.user != "" {
			return true // HTTP.sys: the connection is authenticated
		}
		unauthorized(w, h)
		return false
	}
	scheme, data, _ := strings.Cut(auth, " ")
	switch {
	case strings.EqualFold(scheme, "Basic") && h.win.basic:
		u, p, ok := r.BasicAuth()
		if ok && h.win.mode == WinRMOn && sameUser(u, h) && p == h.win.password {
			return true
		}
	case strings.EqualFold(scheme, "Negotiate") || strings.EqualFold(scheme, "NTLM"):
		msg, err := base64.StdEncoding.DecodeString(strings.TrimSpace(data))
		if err != nil || len(msg) < 12 || !bytes.HasPrefix(msg, []byte("NTLMSSP\x00")) {
			break
		}
		switch binary.LittleEndian.Uint32(msg[8:12]) {
		case 1: // NEGOTIATE → CHALLENGE
			conn.challenge = make([]byte, 8)
			rand.Read(conn.challenge)
			w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(ntlmChallenge(h, conn.challenge, l.plan.domain)))
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(http.StatusUnauthorized)
			return false
		case 3: // AUTHENTICATE
			user, ok := ntlmVerify(msg, conn.challenge, h)
			conn.challenge = nil
			if ok && h.win.mode == WinRMOn {
				conn.user = user
				return true
			}
		}
	}
	l.log.Debug("winrm: authentication refused", "host", h.ip)
	unauthorized(w, h)
	return false
}

// sameUser: a local account, given as "user", ".\user", "HOST\user" or "user@host".
func sameUser(given string, h *host) bool {
	u := given
	if d, rest, ok := strings.Cut(given, `\`); ok {
		if d != "." && !strings.EqualFold(d, h.win.netbios) && !strings.EqualFold(d, h.win.workgroup) {
			return false
		}
		u = rest
	} else if name, _, ok := strings.Cut(given, "@"); ok {
		u = name
	}
	return strings.EqualFold(u, h.win.user)
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// NTLM negotiate flags the challenge sets (MS-NLMP 2.2.2.5). Neither LM_KEY nor KEY_EXCH:
// NTLMv2 without session key exchange, what a WS-Management client over HTTP uses.
const (
	ntlmUnicode        = 0x00000001
	ntlmRequestTarget  = 0x00000004
	ntlmNTLM           = 0x00000200
	ntlmAlwaysSign     = 0x00008000
	ntlmTargetServer   = 0x00020000
	ntlmExtendedSecure = 0x00080000
	ntlmTargetInfo     = 0x00800000
	ntlmVersion        = 0x02000000
	ntlm128            = 0x20000000
	ntlm56             = 0x80000000
)

// ntlmChallenge builds a CHALLENGE_MESSAGE with the host's names and the time.
func ntlmChallenge(h *host, challenge []byte, domain string) []byte {
	target := utf16le(h.win.netbios)
	av := func(id uint16, v []byte) []byte {
		b := make([]byte, 4+len(v))
		binary.LittleEndian.PutUint16(b, id)
		binary.LittleEndian.PutUint16(b[2:], uint16(len(v)))
		copy(b[4:], v)
		return b
	}
	ts := make([]byte, 8)
	binary.LittleEndian.PutUint64(ts, uint64(time.Now().UnixNano()/100)+116444736000000000)
	var info []byte
	info = append(info, av(2, utf16le(h.win.netbios))...) // MsvAvNbDomainName (a workgroup server: its own name)
	info = append(info, av(1, utf16le(h.win.netbios))...) // MsvAvNbComputerName
	info = append(info, av(4, utf16le(strings.ToLower(h.name)))...)
	info = append(info, av(3, utf16le(h.fqdn))...)
	info = append(info, av(7, ts)...) // MsvAvTimestamp
	info = append(info, 0, 0, 0, 0)   // MsvAvEOL
	const head = 56
	msg := make([]byte, head, head+len(target)+len(info))
	copy(msg, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(msg[8:], 2)
	binary.LittleEndian.PutUint16(msg[12:], uint16(len(target)))
	binary.LittleEndian.PutUint16(msg[14:], uint16(len(target)))
	binary.LittleEndian.PutUint32(msg[16:], head)
	flags := uint32(ntlmUnicode | ntlmRequestTarget | ntlmNTLM | ntlmAlwaysSign | ntlmTargetServer | ntlmExtendedSecure | ntlmTargetInfo | ntlmVersion | ntlm128 | ntlm56)
	binary.LittleEndian.PutUint32(msg[20:], flags)
	copy(msg[24:32], challenge)
	binary.LittleEndian.PutUint16(msg[40:], uint16(len(info)))
	binary.LittleEndian.PutUint16(msg[42:], uint16(len(info)))
	binary.LittleEndian.PutUint32(msg[44:], uint32(head+len(target)))
	copy(msg[48:], []byte{10, 0, 0x7c, 0x4f, 0, 0, 0, 15}) // version 10.0 build 20348, NTLM revision 15
	msg = append(msg, target...)
	return append(msg, info...)
}

// ntlmVerify checks an AUTHENTICATE_MESSAGE's NTLMv2 response against the host's account
// (MS-NLMP 3.3.2): NTProofStr = HMAC-MD5(NTOWFv2, server challenge || blob).
func ntlmVerify(msg, challenge []byte, h *host) (string, bool) {
	if len(challenge) != 8 || len(msg) < 64 {
		return "", false
	}
	field := func(off int) ([]byte, bool) {
		n := int(binary.LittleEndian.Uint16(msg[off:]))
		at := int(binary.LittleEndian.Uint32(msg[off+4:]))
		if at < 0 || n < 0 || at+n > len(msg) {
			return nil, false
		}
		return msg[at : at+n], true
	}
	nt, ok1 := field(20)
	dom, ok2 := field(28)
	usr, ok3 := field(36)
	if !ok1 || !ok2 || !ok3 || len(nt) < 16+28 {
		return "", false // NTLMv1 or anonymous: refused, as Windows does with NTLMv2 only
	}
	user, domain := fromUTF16le(usr), fromUTF16le(dom)
	given := user
	if domain != "" {
		given = domain + `\` + user
	}
	if !sameUser(given, h) {
		return user, false
	}
	m := md4.New()
	m.Write(utf16le(h.win.password))
	mac := hmac.New(md5.New, m.Sum(nil))
	mac.Write(utf16le(strings.ToUpper(user) + domain))
	ntowf := mac.Sum(nil)
	proof := hmac.New(md5.New, ntowf)
	proof.Write(challenge)
	proof.Write(nt[16:])
	return user, hmac.Equal(proof.Sum(nil), nt[:16])
}

// --- WS-Management ---

const (
	nsShell        = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
	actionCreate   = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
	actionDelete   = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
	actionCommand  = nsShell + "/Command"
	actionReceive  = nsShell + "/Receive"
	actionSend     = nsShell + "/Send"
	actionSignal   = nsShell + "/Signal"
	stateDone      = nsShell + "/CommandState/Done"
	stateRunning   = nsShell + "/CommandState/Running"
	receiveMaxSend = 48 << 10 // raw bytes of output per Receive answer (well under MaxEnvelopeSize once base64)
)

type wsmanRequest struct {
	Header struct {
		Action    string `xml:"Action"`
		MessageID string `xml:"MessageID"`
		Timeout   string `xml:"OperationTimeout"`
		Selectors []struct {
			Name  string `xml:"Name,attr"`
			Value string `xml:",chardata"`
		} `xml:"SelectorSet>Selector"`
	} `xml:"Header"`
	Body struct {
		CommandLine struct {
			Command   string   `xml:"Command"`
			Arguments []string `xml:"Arguments"`
		} `xml:"CommandLine"`
		Receive struct {
			Stream struct {
				CommandID string `xml:"CommandId,attr"`
			} `xml:"DesiredStream"`
		} `xml:"Receive"`
		Signal struct {
			CommandID string `xml:"CommandId,attr"`
			Code      string `xml:"Code"`
		} `xml:"Signal"`
		Send struct {
			Stream struct {
				CommandID string `xml:"CommandId,attr"`
			} `xml:"Stream"`
		} `xml:"Send"`
	} `xml:"Body"`
}

func (q *wsmanRequest) shellID() string {
	for _, s := range q.Header.Selectors {
		if s.Name == "ShellId" {
			return strings.TrimSpace(s.Value)
		}
	}
	return ""
}

func wsmanUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := strings.ToUpper(hex.EncodeToString(b))
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

const envelopeOpen = `<s:Envelope xml:lang="en-US" xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:rsp="http://schemas.microsoft.com/wbem/wsman/1/windows/shell" xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">`

func writeEnvelope(w http.ResponseWriter, status int, action, relatesTo, body string) {
	w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `%s<s:Header><a:Action>%s</a:Action><a:MessageID>uuid:%s</a:MessageID><a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To><a:RelatesTo>%s</a:RelatesTo></s:Header><s:Body>%s</s:Body></s:Envelope>`,
		envelopeOpen, action, wsmanUUID(), html.EscapeString(relatesTo), body)
}

// wsmanFault answers a WS-Management fault (HTTP 500) with its subcode, text and the
// WSManFault code Windows gives.
func wsmanFault(w http.ResponseWriter, q *wsmanRequest, subcode string, code uint32, text string) {
	writeEnvelope(w, http.StatusInternalServerError, "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", q.Header.MessageID,
		fmt.Sprintf(`<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>%s</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">%s</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="%d" Machine="%s"><f:Message>%s</f:Message></f:WSManFault></s:Detail></s:Fault>`,
			subcode, html.EscapeString(text), code, "", html.EscapeString(text)))
}

func (l *Lab) winrmSOAP(w http.ResponseWriter, r *http.Request, h *host, body []byte) {
	var q wsmanRequest
	if err := xml.Unmarshal(body, &q); err != nil {
		w.Header().Set("Content-Type", "application/soap+xml;charset=UTF-8")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	st := l.winrmStateOf(h)
	switch q.Header.Action {
	case actionCreate:
		id := wsmanUUID()
		st.mu.Lock()
		if len(st.shells) >= 30 { // MaxShellsPerUser's default
			st.mu.Unlock()
			wsmanFault(w, &q, "w:QuotaLimit", 2150859174, "The WS-Management service cannot process the request. This user is allowed a maximum number of 30 concurrent shells, which has been exceeded. Close existing shells or raise the quota for this user.")
			return
		}
		st.shells[id] = &winShell{id: id, cmds: map[string]*winCommand{}}
		st.mu.Unlock()
		addr := "http://" + h.ip.String() + ":5985/wsman"
		writeEnvelope(w, http.StatusOK, "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse", q.Header.MessageID,
			fmt.Sprintf(`<x:ResourceCreated><a:Address>%s</a:Address><a:ReferenceParameters><w:ResourceURI>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</w:ResourceURI><w:SelectorSet><w:Selector Name="ShellId">%s</w:Selector></w:SelectorSet></a:ReferenceParameters></x:ResourceCreated><rsp:Shell xmlns:rsp="%s"><rsp:ShellId>%s</rsp:ShellId><rsp:ResourceUri>http://schemas.microsoft.com/wbem/wsman/1/windows/shell/cmd</rsp:ResourceUri><rsp:Owner>%s</rsp:Owner><rsp:ClientIP>%s</rsp:ClientIP><rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut><rsp:InputStreams>stdin</rsp:InputStreams><rsp:OutputStreams>stdout stderr</rsp:OutputStreams><rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity></rsp:Shell>`,
				addr, id, nsShell, id, html.EscapeString(h.win.netbios+`\`+h.win.user), remoteIP(r)))
		return
	}
	st.mu.Lock()
	sh := st.shells[q.shellID()]
	st.mu.Unlock()
	if sh == nil {
		wsmanFault(w, &q, "w:InvalidSelectors", 2150858843, "The request for the Windows Remote Shell with ShellId "+q.shellID()+" failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation.")
		return
	}
	switch q.Header.Action {
	case actionDelete:
		st.mu.Lock()
		delete(st.shells, sh.id)
		st.mu.Unlock()
		for _, c := range sh.cmds {
			c.cancel()
		}
		writeEnvelope(w, http.StatusOK, "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", q.Header.MessageID, "")
	case actionCommand:
		c := l.startCommand(h, q.Body.CommandLine.Command, q.Body.CommandLine.Arguments)
		st.mu.Lock()
		sh.cmds[c.id] = c
		st.mu.Unlock()
		writeEnvelope(w, http.StatusOK, nsShell+"/CommandResponse", q.Header.MessageID,
			`<rsp:CommandResponse><rsp:CommandId>`+c.id+`</rsp:CommandId></rsp:CommandResponse>`)
	case actionSend:
		writeEnvelope(w, http.StatusOK, nsShell+"/SendResponse", q.Header.MessageID, `<rsp:SendResponse/>`)
	case actionSignal:
		st.mu.Lock()
		c := sh.cmds[q.Body.Signal.CommandID]
		delete(sh.cmds, q.Body.Signal.CommandID)
		st.mu.Unlock()
		if c != nil {
			c.cancel()
		}
		writeEnvelope(w, http.StatusOK, nsShell+"/SignalResponse", q.Header.MessageID, `<rsp:SignalResponse/>`)
	case actionReceive:
		st.mu.Lock()
		c := sh.cmds[q.Body.Receive.Stream.CommandID]
		st.mu.Unlock()
		if c == nil {
			wsmanFault(w, &q, "w:InvalidParameter", 2150858793, "The Windows Remote Shell received a request to perform an operation on a command identifier that does not exist.")
			return
		}
		l.receive(w, r, &q, c)
	default:
		wsmanFault(w, &q, "a:ActionNotSupported", 2150858771, "The action is not supported by the service.")
	}
}

func remoteIP(r *http.Request) string {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	return host
}

func (l *Lab) winrmStateOf(h *host) *winrmState {
	l.winMu.Lock()
	defer l.winMu.Unlock()
	if l.winShells == nil {
		l.winShells = map[*host]*winrmState{}
	}
	st := l.winShells[h]
	if st == nil {
		st = &winrmState{shells: map[string]*winShell{}}
		l.winShells[h] = st
	}
	return st
}

// receive answers with the output so far, waiting (up to the request's OperationTimeout)
// while the command runs and has nothing new; the answer says Done with the exit code once
// everything was sent.
func (l *Lab) receive(w http.ResponseWriter, r *http.Request, q *wsmanRequest, c *winCommand) {
	timeout := parseISODuration(q.Header.Timeout, 60*time.Second)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := c.wait()
		c.mu.Lock()
		if len(c.stdout) > 0 || len(c.stderr) > 0 || c.done {
			var b strings.Builder
			b.WriteString(`<rsp:ReceiveResponse>`)
			budget := receiveMaxSend
			take := func(name string, buf *[]byte) {
				for len(*buf) > 0 && budget > 0 {
					n := min(len(*buf), budget, 16<<10)
					fmt.Fprintf(&b, `<rsp:Stream Name="%s" CommandId="%s">%s</rsp:Stream>`, name, c.id, base64.StdEncoding.EncodeToString((*buf)[:n]))
					*buf, budget = (*buf)[n:], budget-n
				}
			}
			take("stdout", &c.stdout)
			take("stderr", &c.stderr)
			if c.done && len(c.stdout) == 0 && len(c.stderr) == 0 {
				fmt.Fprintf(&b, `<rsp:Stream Name="stdout" CommandId="%s" End="true"></rsp:Stream><rsp:Stream Name="stderr" CommandId="%s" End="true"></rsp:Stream>`, c.id, c.id)
				fmt.Fprintf(&b, `<rsp:CommandState CommandId="%s" State="%s"><rsp:ExitCode>%d</rsp:ExitCode></rsp:CommandState>`, c.id, stateDone, c.exit)
			} else {
				fmt.Fprintf(&b, `<rsp:CommandState CommandId="%s" State="%s"></rsp:CommandState>`, c.id, stateRunning)
			}
			b.WriteString(`</rsp:ReceiveResponse>`)
			c.mu.Unlock()
			writeEnvelope(w, http.StatusOK, nsShell+"/ReceiveResponse", q.Header.MessageID, b.String())
			return
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			wsmanFault(w, q, "w:TimedOut", 2150858793, "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.")
			return
		case <-r.Context().Done():
			return
		case <-l.ctx.Done():
			return
		}
	}
}

// parseISODuration reads "PT60S" / "PT60.000S" (the OperationTimeout header).
func parseISODuration(s string, def time.Duration) time.Duration {
	s = strings.TrimSpace(s)
	v, ok := strings.CutPrefix(s, "PT")
	if !ok || !strings.HasSuffix(v, "S") {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "S"), 64)
	if err != nil || f <= 0 {
		return def
	}
	return time.Duration(f * float64(time.Second))
}

// startCommand runs a command line of the shell in the background: cmd.exe syntax, or
// powershell.exe -EncodedCommand (what WinRM clients send for PowerShell).
func (l *Lab) startCommand(h *host, line string, args []string) *winCommand {
	ctx, cancel := context.WithCancel(l.ctx)
	c := &winCommand{id: wsmanUUID(), cancel: cancel, notify: make(chan struct{})}
	if len(args) > 0 {
		line += " " + strings.Join(args, " ")
	}
	l.goServe(func() {
		defer cancel()
		var code int
		var errOut string
		if script, ok := encodedPowerShell(line); ok {
			code, errOut = runPowerShell(ctx, h, script, c)
			if errOut != "" {
				errOut = clixml(errOut)
			}
		} else {
			code, errOut = runCmd(ctx, h, line, c)
		}
		c.mu.Lock()
		c.stderr = append(c.stderr, errOut...)
		c.done, c.exit = true, code
		c.changed()
		c.mu.Unlock()
	})
	return c
}

// encodedPowerShell decodes `powershell.exe -EncodedCommand <base64 of UTF-16LE>`.
func encodedPowerShell(line string) (string, bool) {
	f := strings.Fields(line)
	if len(f) < 3 || !strings.EqualFold(strings.TrimSuffix(strings.ToLower(f[0]), ".exe"), "powershell") {
		return "", false
	}
	for i := 1; i+1 < len(f); i++ {
		switch strings.ToLower(f[i]) {
		case "-encodedcommand", "-enc", "-e", "-ec":
			raw, err := base64.StdEncoding.DecodeString(f[i+1])
			if err != nil || len(raw)%2 != 0 {
				return "", false
			}
			return fromUTF16le(raw), true
		}
	}
	return "", false
}

// clixml serialises error text the way powershell.exe writes its error stream when its
// host is not interactive.
func clixml(text string) string {
	var b strings.Builder
	b.WriteString("#< CLIXML\r\n<Objs Version=\"1.1.0.1\" xmlns=\"http://schemas.microsoft.com/powershell/2004/04\">")
	for _, line := range strings.SplitAfter(text, "\n") {
		if line == "" {
			continue
		}
		line = strings.ReplaceAll(strings.TrimSuffix(line, "\n"), "\r", "")
		b.WriteString(`<S S="Error">` + html.EscapeString(line) + `_x000D__x000A_</S>`)
	}
	b.WriteString("</Objs>")
	return b.String()
}
