package discovery

// testBridge plays a site's bridge for the service tests: it pulls the site's probes from
// PROBES, opens the sealed credentials with its curve key and runs the probes against the
// real lab with plain clients (TCP connect, x/crypto/ssh, gosnmp, net/http, crypto/tls).
// It answers with the kinds' own result types and error codes (libs/probes/<kind>), as the
// real bridge does. It is not the real bridge (a service does not import another service,
// libs/layout): the outpost e2e tests run discovery against the real one.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/ssh"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes"
	"github.com/outpost-dev/outpost/libs/probes/httpget"
	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/libs/probes/sshexec"
	"github.com/outpost-dev/outpost/libs/probes/tcpscan"
	"github.com/outpost-dev/outpost/libs/probes/tlscert"
	"github.com/outpost-dev/outpost/libs/probes/winrmexec"
	"github.com/outpost-dev/outpost/libs/seal"
)

type testBridge struct {
	t     *testing.T
	js    jetstream.JetStream
	site  string
	key   nkeys.KeyPair
	pub   *bus.Publisher
	mu    sync.Mutex
	seen  map[string]int // kind → probes run
	slots chan struct{}
	// forgeHost, when set, is reported as up in every scan: a bridge lying about an address
	// it was never asked to scan.
	forgeHost string
	// intercept, when set, may answer a probe instead of running it (a status and an error,
	// no data): a loaded bridge that took the probe past its deadline, an exchange that got
	// no answer. A nil error runs the probe.
	intercept func(p *envelope.Probe) (envelope.Status, *envelope.Error)
}

func (b *testBridge) setIntercept(f func(p *envelope.Probe) (envelope.Status, *envelope.Error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.intercept = f
}

func startTestBridge(ctx context.Context, t *testing.T, js jetstream.JetStream, site string, key nkeys.KeyPair) *testBridge {
	b := &testBridge{t: t, js: js, site: site, key: key, seen: map[string]int{}, slots: make(chan struct{}, 32),
		pub: bus.NewPublisher(js, envelope.AgentSource(site, "br-test"), nil)}
	cons, err := js.CreateOrUpdateConsumer(ctx, bus.StreamProbes, jetstream.ConsumerConfig{Durable: "test-bridge-" + site,
		FilterSubject: "probe." + site + ".>", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute, MaxAckPending: 4096})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		_, p, err := envelope.DecodeInto[*envelope.Probe](m.Headers(), m.Data())
		if err != nil {
			t.Errorf("test bridge: decode probe: %v", err)
			return
		}
		go func() {
			b.slots <- struct{}{} // bounded like a bridge's worker pool (and the open-file limit)
			defer func() { <-b.slots }()
			b.run(ctx, p)
		}()
	}, jetstream.PullMaxMessages(512))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return b
}

func (b *testBridge) count(kind string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[kind]
}

func (b *testBridge) emit(ctx context.Context, p *envelope.Probe, seq int, final bool, status envelope.Status, data any, e *envelope.Error) {
	raw, _ := json.Marshal(data)
	r := &envelope.Result{ID: p.ID + "-" + strconv.Itoa(seq), Probe: p.ID, Run: p.Run, App: p.App, Agent: "br-test", Site: p.Site,
		Kind: p.Kind, Status: status, Seq: seq, Final: final, Started: time.Now().UTC(), Finished: time.Now().UTC(), Data: raw, Error: e}
	if _, err := b.pub.Publish(ctx, bus.ResultSubject(p.App, p.Site, p.Kind, r.Agent), envelope.Meta{ID: r.ID, Run: p.Run}, r); err != nil && ctx.Err() == nil {
		b.t.Errorf("test bridge: publish result: %v", err)
	}
}

var errHostKey = errors.New("host key changed")

func (b *testBridge) run(ctx context.Context, p *envelope.Probe) {
	b.mu.Lock()
	b.seen[p.Kind]++
	intercept := b.intercept
	b.mu.Unlock()
	if intercept != nil {
		if st, e := intercept(p); e != nil {
			b.emit(ctx, p, 0, true, st, nil, e)
			return
		}
	}
	if time.Now().After(p.Deadline) {
		// as the real bridge (services/bridge, work.go): a probe whose deadline passed while
		// it waited for a worker is not run, and answered so (code expired) — discovery
		// sends it again like a probe nobody answered
		b.emit(ctx, p, 0, true, envelope.StatusTimeout, nil, &envelope.Error{Code: probes.CodeExpired, Message: "the probe's deadline passed before a worker took it: not run"})
		return
	}
	var creds []seal.Secret
	for _, sc := range p.Secrets {
		s, err := seal.Open(b.key, sc, p.ID)
		if err != nil {
			b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: "auth", Message: err.Error()})
			return
		}
		creds = append(creds, s)
	}
	var params map[string]any
	_ = json.Unmarshal(p.Params, &params)
	port := 0
	if v, ok := params["port"].(float64); ok {
		port = int(v)
	}
	switch p.Kind {
	case "tcp_scan":
		var targets []string
		for _, x := range params["targets"].([]any) {
			targets = append(targets, x.(string))
		}
		var ports []int
		for _, x := range params["ports"].([]any) {
			ports = append(ports, int(x.(float64)))
		}
		var mu sync.Mutex
		var hosts []tcpscan.Host
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for _, ip := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var open []int
				for _, port := range ports {
					sem <- struct{}{}
					c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(port)), 2*time.Second)
					<-sem
					if err == nil {
						c.Close()
						open = append(open, port)
					}
				}
				if len(open) > 0 {
					mu.Lock()
					hosts = append(hosts, tcpscan.Host{IP: ip, Open: open})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		b.mu.Lock()
		if b.forgeHost != "" {
			hosts = append(hosts, tcpscan.Host{IP: b.forgeHost, Open: []int{22}})
		}
		b.mu.Unlock()
		b.emit(ctx, p, 0, false, envelope.StatusPartial, tcpscan.Chunk{Hosts: hosts, Done: len(targets), Total: len(targets)}, nil)
		b.emit(ctx, p, 1, true, envelope.StatusOK, tcpscan.Summary{Addresses: len(targets), HostsUp: len(hosts)}, nil)
	case "snmp_get", "snmp_walk":
		var oids []string
		for _, x := range params["oids"].([]any) {
			oids = append(oids, x.(string))
		}
		var failed []string
		for _, c := range creds {
			g := &gosnmp.GoSNMP{Target: p.Target, Port: 161, Community: c.Secret, Version: gosnmp.Version2c, Timeout: 2 * time.Second, Retries: 2, MaxOids: 60}
			if err := g.Connect(); err != nil {
				continue
			}
			var vals []snmp.Value
			var err error
			if p.Kind == "snmp_get" {
				var pkt *gosnmp.SnmpPacket
				if pkt, err = g.Get(oids); err == nil {
					for _, v := range pkt.Variables {
						vals = append(vals, snmpOf(v))
					}
				}
			} else {
				for _, root := range oids {
					if err = g.BulkWalk(root, func(v gosnmp.SnmpPDU) error { vals = append(vals, snmpOf(v)); return nil }); err != nil {
						break
					}
				}
			}
			g.Conn.Close()
			if err != nil {
				if os.Getenv("DEBUG_BRIDGE") != "" {
					b.t.Logf("snmp %s %s with %s: %v", p.Kind, p.Target, c.Name, err)
				}
				failed = append(failed, c.Name)
				continue
			}
			at := snmp.Attempt{Version: "2c", Credential: c.Name, FailedCredentials: failed}
			if p.Kind == snmpget.Kind {
				b.emit(ctx, p, 0, true, envelope.StatusOK, snmpget.Result{IP: p.Target, Port: 161, Attempt: at, Values: vals}, nil)
			} else {
				b.emit(ctx, p, 0, true, envelope.StatusOK, snmpwalk.Result{IP: p.Target, Port: 161, Attempt: at, Rows: len(vals), Values: vals}, nil)
			}
			return
		}
		b.emit(ctx, p, 0, true, envelope.StatusTimeout, snmpget.Result{IP: p.Target, Attempt: snmp.Attempt{FailedCredentials: failed}},
			&envelope.Error{Code: probes.CodeTimeout, Message: "no SNMP answer"})
	case winrmexec.Kind:
		b.runWinRM(ctx, p, creds)
	case "ssh_exec":
		var failed []string
		known, _ := params["known_host_key"].(string)
		for _, c := range creds {
			// as the real ssh_exec: the key on record is checked before any credential
			var seen string
			cl, err := ssh.Dial("tcp", net.JoinHostPort(p.Target, "22"), &ssh.ClientConfig{User: c.Username,
				Auth: []ssh.AuthMethod{ssh.Password(c.Secret)}, Timeout: 5 * time.Second,
				HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
					seen = ssh.FingerprintSHA256(k)
					if known != "" && seen != known {
						return errHostKey
					}
					return nil
				}})
			if errors.Is(err, errHostKey) {
				b.emit(ctx, p, 0, true, envelope.StatusError, sshexec.Result{IP: p.Target, Port: 22, HostKey: seen, FailedCredentials: []string{}},
					&envelope.Error{Code: sshexec.CodeHostKeyMismatch, Message: "host key for " + p.Target + " changed from " + known + " to " + seen + ": no credential was sent"})
				return
			}
			if err != nil {
				failed = append(failed, c.Name)
				continue
			}
			var outs []sshexec.Output
			for _, x := range params["commands"].([]any) {
				cmd := x.(string)
				s, _ := cl.NewSession()
				var stdout strings.Builder
				s.Stdout = &stdout
				code := 0
				if err := s.Run(cmd); err != nil {
					code = 1
					if ee, ok := err.(*ssh.ExitError); ok {
						code = ee.ExitStatus()
					}
				}
				s.Close()
				outs = append(outs, sshexec.Output{Command: cmd, Stdout: probes.Blob{Text: stdout.String(), Size: int64(stdout.Len())}, ExitCode: &code})
			}
			cl.Close()
			b.emit(ctx, p, 0, true, envelope.StatusOK, sshexec.Result{IP: p.Target, Port: 22, Credential: c.Name, FailedCredentials: failed, Outputs: outs,
				HostKey: seen, HostKeyType: "ssh-ed25519", Username: c.Username}, nil)
			return
		}
		// as the real ssh_exec: auth_failed, the refused credentials in the data (the
		// message is for people: discovery must not need it)
		b.emit(ctx, p, 0, true, envelope.StatusError, sshexec.Result{IP: p.Target, Port: 22, FailedCredentials: failed, Outputs: []sshexec.Output{}},
			&envelope.Error{Code: probes.CodeAuth, Message: "no credential was accepted"})
	case "http_get":
		scheme := "http"
		if port == 443 || port == 8443 {
			scheme = "https"
		}
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := cl.Get(fmt.Sprintf("%s://%s:%d/", scheme, p.Target, port))
		if err != nil {
			b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: probes.CodeUnreachable, Message: err.Error()})
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		title := ""
		if m := regexp.MustCompile(`(?is)<title>(.*?)</title>`).FindSubmatch(body); m != nil {
			title = strings.TrimSpace(string(m[1]))
		}
		res := httpget.Result{URL: resp.Request.URL.String(), Status: resp.StatusCode, StatusText: resp.Status, Proto: resp.Proto,
			Server: resp.Header.Get("Server"), Title: title, Headers: resp.Header}
		if resp.TLS != nil {
			res.TLS = &probes.TLS{Version: tls.VersionName(resp.TLS.Version)}
		}
		b.emit(ctx, p, 0, true, envelope.StatusOK, res, nil)
	case "tls_cert":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(p.Target, strconv.Itoa(port)), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: probes.CodeUnreachable, Message: err.Error()})
			return
		}
		leaf := c.ConnectionState().PeerCertificates[0]
		c.Close()
		sum := sha256.Sum256(leaf.Raw)
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		b.emit(ctx, p, 0, true, envelope.StatusOK, tlscert.Result{IP: p.Target, Port: port, TLS: probes.TLS{Certificate: &probes.Certificate{
			SubjectCN: leaf.Subject.CommonName, Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), Serial: leaf.SerialNumber.String(),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, DNSNames: leaf.DNSNames, IPs: ips, SHA256: hex.EncodeToString(sum[:])}}}, nil)
	default:
		b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: probes.CodeUnsupported, Message: p.Kind + " is not played by the test bridge"})
	}
}

func snmpOf(pdu gosnmp.SnmpPDU) snmp.Value {
	var v any
	switch pdu.Type {
	case gosnmp.OctetString:
		b := pdu.Value.([]byte)
		if len(b) == 6 && (strings.Contains(pdu.Name, ".1.3.6.1.2.1.2.2.1.6.") || strings.Contains(pdu.Name, ".1.0.8802.1.1.2.1.4.1.1.5.")) {
			v = net.HardwareAddr(b).String()
		} else {
			v = string(b)
		}
	case gosnmp.NoSuchObject, gosnmp.NoSuchInstance, gosnmp.Null, gosnmp.EndOfMibView:
	case gosnmp.Integer:
		v = pdu.Value
	default:
		v = fmt.Sprint(pdu.Value)
		if n, err := strconv.ParseFloat(v.(string), 64); err == nil {
			v = n
		}
	}
	return snmp.Value{OID: pdu.Name, Type: pdu.Type.String(), Value: v}
}
