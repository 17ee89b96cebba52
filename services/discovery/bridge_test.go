package discovery

// testBridge plays a site's bridge for the service tests: it pulls the site's probes from
// PROBES, opens the sealed credentials with its curve key and runs the probes against the
// real lab with plain clients (TCP connect, x/crypto/ssh, gosnmp, net/http, crypto/tls).
// It is not the real bridge (a service does not import another service): the outpost e2e
// test runs the real one.

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
	b.mu.Unlock()
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
		var hosts []scanHost
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
					hosts = append(hosts, scanHost{IP: ip, Open: open})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		b.mu.Lock()
		if b.forgeHost != "" {
			hosts = append(hosts, scanHost{IP: b.forgeHost, Open: []int{22}})
		}
		b.mu.Unlock()
		b.emit(ctx, p, 0, false, envelope.StatusPartial, map[string]any{"hosts": hosts, "done": len(targets), "total": len(targets)}, nil)
		b.emit(ctx, p, 1, true, envelope.StatusOK, map[string]any{"addresses": len(targets), "hosts_up": len(hosts)}, nil)
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
			var vals []snmpValue
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
			b.emit(ctx, p, 0, true, envelope.StatusOK, map[string]any{"ip": p.Target, "credential": c.Name, "failed_credentials": failed, "values": vals}, nil)
			return
		}
		b.emit(ctx, p, 0, true, envelope.StatusTimeout, map[string]any{"ip": p.Target, "failed_credentials": failed}, &envelope.Error{Code: "timeout", Message: "no SNMP answer"})
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
				b.emit(ctx, p, 0, true, envelope.StatusError, map[string]any{"ip": p.Target, "host_key": seen, "failed_credentials": []string{}},
					&envelope.Error{Code: codeHostKey, Message: "host key for " + p.Target + " changed from " + known + " to " + seen + ": no credential was sent"})
				return
			}
			if err != nil {
				failed = append(failed, c.Name)
				continue
			}
			var outs []map[string]any
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
				outs = append(outs, map[string]any{"command": cmd, "stdout": map[string]any{"text": stdout.String()}, "exit_code": code})
			}
			cl.Close()
			b.emit(ctx, p, 0, true, envelope.StatusOK, map[string]any{"ip": p.Target, "credential": c.Name, "failed_credentials": failed, "outputs": outs,
				"host_key": seen, "host_key_type": "ssh-ed25519"}, nil)
			return
		}
		// as the real ssh_exec: no data, the refused credentials named in the message
		b.emit(ctx, p, 0, true, envelope.StatusError, nil,
			&envelope.Error{Code: "auth_failed", Message: p.Target + ":22 refused every credential (" + strings.Join(failed, ", ") + ")"})
	case "http_get":
		scheme := "http"
		if port == 443 || port == 8443 {
			scheme = "https"
		}
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		resp, err := cl.Get(fmt.Sprintf("%s://%s:%d/", scheme, p.Target, port))
		if err != nil {
			b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: "connect", Message: err.Error()})
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		title := ""
		if m := regexp.MustCompile(`(?is)<title>(.*?)</title>`).FindSubmatch(body); m != nil {
			title = strings.TrimSpace(string(m[1]))
		}
		b.emit(ctx, p, 0, true, envelope.StatusOK, map[string]any{"url": resp.Request.URL.String(), "status": resp.StatusCode,
			"server": resp.Header.Get("Server"), "title": title}, nil)
	case "tls_cert":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", net.JoinHostPort(p.Target, strconv.Itoa(port)), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: "connect", Message: err.Error()})
			return
		}
		leaf := c.ConnectionState().PeerCertificates[0]
		c.Close()
		sum := sha256.Sum256(leaf.Raw)
		var ips []string
		for _, ip := range leaf.IPAddresses {
			ips = append(ips, ip.String())
		}
		b.emit(ctx, p, 0, true, envelope.StatusOK, map[string]any{"ip": p.Target, "port": port, "certificate": CertFact{
			SubjectCN: leaf.Subject.CommonName, Subject: leaf.Subject.String(), Issuer: leaf.Issuer.String(), Serial: leaf.SerialNumber.String(),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, DNSNames: leaf.DNSNames, IPs: ips, SHA256: hex.EncodeToString(sum[:])}}, nil)
	default:
		b.emit(ctx, p, 0, true, envelope.StatusError, nil, &envelope.Error{Code: "unsupported", Message: p.Kind + " is not played by the test bridge"})
	}
}

func snmpOf(pdu gosnmp.SnmpPDU) snmpValue {
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
	return snmpValue{OID: pdu.Name, Type: pdu.Type.String(), Value: v}
}
