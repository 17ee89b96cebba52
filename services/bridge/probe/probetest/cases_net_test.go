package probetest_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/lab"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/probetest"
)

// --- banner ---

type bannerResult struct {
	Banner struct {
		Text        string `json:"text"`
		Size        int64  `json:"size"`
		Truncated   bool   `json:"truncated"`
		SizeAtLeast bool   `json:"size_at_least"`
	} `json:"banner"`
	Service string `json:"service"`
	Product string `json:"product"`
	Version string `json:"version"`
	Silent  bool   `json:"silent"`
}

func bannerCases(t *testing.T) []probetest.Case {
	lx := linuxHost(t)
	web80 := find(t, "web server on port 80", func(h lab.Host) bool {
		return h.Class == lab.ClassWeb && len(h.Web) > 0 && h.Web[0].Port == 80 && strings.Contains(h.Web[0].Server, "/")
	})
	return []probetest.Case{
		{Name: probetest.Success, Req: req(lx.IP, map[string]any{"port": 22}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[bannerResult](t, o.Data)
			eq(t, "banner", strings.TrimRight(r.Banner.Text, "\r\n"), lx.SSHVersion)
			eq(t, "service", r.Service, "ssh")
			if r.Product == "" || !strings.Contains(lx.SSHVersion, r.Product+"_"+r.Version) {
				t.Errorf("product %q version %q do not come from %q", r.Product, r.Version, lx.SSHVersion)
			}
		}},
		{Name: probetest.Success + "/send", Req: req(web80.IP+":80", map[string]any{"send": "HEAD / HTTP/1.0\r\n\r\n"}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[bannerResult](t, o.Data)
			eq(t, "service", r.Service, "http")
			eq(t, "product", r.Product+"/"+r.Version, web80.Web[0].Server)
		}},
		{Name: probetest.Success + "/closed-port", Req: req(lx.IP, map[string]any{"port": 1}), WantCode: probe.CodeUnreachable},
		{Name: probetest.BadCreds, NA: "banner uses no credentials"},
		{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"port": 22, "read_timeout": "300ms"}), Check: func(t *testing.T, o probetest.Outcome) {
			if r := probetest.Decode[bannerResult](t, o.Data); !r.Silent {
				t.Errorf("a stalled port is not reported silent: %+v", r)
			}
		}},
		{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"port": 22}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[bannerResult](t, o.Data)
			eq(t, "service on the wrong-protocol host's port 22", r.Service, "smtp")
			eq(t, "product", r.Product, "Postfix")
		}},
		{Name: probetest.Cancel, Req: req(stall(t), map[string]any{"port": 22, "read_timeout": "30s"}), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		{Name: probetest.Oversize, Req: req(stream(t), map[string]any{"port": 80, "max_bytes": 1000}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[bannerResult](t, o.Data)
			if !r.Banner.Truncated || !r.Banner.SizeAtLeast || r.Banner.Size <= 1000 || len(r.Banner.Text) != 1000 {
				t.Errorf("stream: truncated %v size %d (at least %v), %d bytes kept; want 1000 kept of more",
					r.Banner.Truncated, r.Banner.Size, r.Banner.SizeAtLeast, len(r.Banner.Text))
			}
		}},
		{Name: "bad_params", Req: req(lx.IP, map[string]any{"port": 70000}), WantCode: probe.CodeBadParams},
		deny(t, lx.IP, map[string]any{"port": 22}),
	}
}

// --- http_get ---

type httpResult struct {
	Status        int                 `json:"status"`
	Server        string              `json:"server"`
	Title         string              `json:"title"`
	Headers       map[string][]string `json:"headers"`
	BodyRead      int64               `json:"body_read"`
	BodyTruncated bool                `json:"body_truncated"`
	TLS           *struct {
		Verified    bool   `json:"verified"`
		VerifyError string `json:"verify_error"`
		Certificate struct {
			SHA256   string    `json:"sha256"`
			NotAfter time.Time `json:"not_after"`
		} `json:"certificate"`
	} `json:"tls"`
}

func httpGetCases(t *testing.T) []probetest.Case {
	var cases []probetest.Case
	// every web port of the lab answers what the manifest says
	for _, h := range env.m.Hosts {
		for _, w := range h.Web {
			scheme := map[bool]string{true: "https", false: "http"}[w.TLS]
			c := probetest.Case{Name: fmt.Sprintf("%s/%s:%d", probetest.Success, h.IP, w.Port), Req: req(h.IP, map[string]any{"port": w.Port, "scheme": scheme}),
				Check: func(t *testing.T, o probetest.Outcome) {
					r := probetest.Decode[httpResult](t, o.Data)
					eq(t, "status", r.Status, w.Status)
					eq(t, "server", r.Server, w.Server)
					eq(t, "title", r.Title, w.Title)
					if w.TLS {
						if r.TLS == nil {
							t.Fatal("no TLS details for https")
						}
						for _, c := range h.Certificates {
							if slices.Contains(c.Ports, w.Port) {
								eq(t, "certificate sha256", r.TLS.Certificate.SHA256, c.SHA256)
							}
						}
						if r.TLS.Verified || r.TLS.VerifyError == "" {
							t.Errorf("a self-signed certificate reported verified %v (%q)", r.TLS.Verified, r.TLS.VerifyError)
						}
					}
				}}
			cases = append(cases, c)
		}
	}
	if len(cases) < 3 {
		t.Fatalf("the lab has only %d web ports", len(cases))
	}
	h, _ := httpsHost(t)
	return append(cases,
		probetest.Case{Name: probetest.Success + "/verify", Req: req(h.IP, map[string]any{"port": 443, "tls_verify": true}), WantCode: probe.CodeProtocol},
		probetest.Case{Name: probetest.BadCreds, NA: "http_get sends no credentials (http_request does)"},
		probetest.Case{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"port": 80, "timeout": "500ms"}), WantCode: probe.CodeTimeout},
		probetest.Case{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"port": 80}), WantCode: probe.CodeProtocol},
		probetest.Case{Name: probetest.WrongProtocol + "/tls", Req: req(wrong(t), map[string]any{"port": 443}), WantCode: probe.CodeProtocol},
		probetest.Case{Name: probetest.Cancel, Req: req(stall(t), map[string]any{"port": 80}), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		probetest.Case{Name: probetest.Oversize, Req: req(h.IP, map[string]any{"port": 443, "max_body": 64}), Check: func(t *testing.T, o probetest.Outcome) {
			r := probetest.Decode[httpResult](t, o.Data)
			if !r.BodyTruncated || r.BodyRead != 64 {
				t.Errorf("body truncated %v after %d bytes, want true after 64", r.BodyTruncated, r.BodyRead)
			}
		}},
		probetest.Case{Name: probetest.Oversize + "/stream", Req: req(stream(t), map[string]any{"port": 80, "timeout": "5s"}), WantCode: probe.CodeProtocol},
		deny(t, h.IP, map[string]any{"port": 443}),
	)
}

// --- tls_cert ---

type certResult struct {
	Version     string `json:"version"`
	Verified    bool   `json:"verified"`
	Certificate struct {
		SubjectCN  string    `json:"subject_cn"`
		Subject    string    `json:"subject"`
		Issuer     string    `json:"issuer"`
		DNSNames   []string  `json:"dns_names"`
		IPs        []string  `json:"ips"`
		NotBefore  time.Time `json:"not_before"`
		NotAfter   time.Time `json:"not_after"`
		DaysLeft   int       `json:"days_left"`
		Expired    bool      `json:"expired"`
		SelfSigned bool      `json:"self_signed"`
		SHA256     string    `json:"sha256"`
	} `json:"certificate"`
	Chain []struct {
		SHA256 string `json:"sha256"`
	} `json:"chain"`
}

func checkCert(t *testing.T, o probetest.Outcome, want lab.Certificate) {
	r := probetest.Decode[certResult](t, o.Data)
	c := r.Certificate
	eq(t, "sha256", c.SHA256, want.SHA256)
	eq(t, "subject CN", c.SubjectCN, want.SubjectCN)
	eq(t, "subject", c.Subject, want.Subject)
	eq(t, "issuer", c.Issuer, want.Issuer)
	eq(t, "not_after", c.NotAfter.Equal(want.NotAfter), true)
	eq(t, "not_before", c.NotBefore.Equal(want.NotBefore), true)
	eq(t, "DNS SANs", fmt.Sprint(c.DNSNames), fmt.Sprint(want.DNSNames))
	eq(t, "IP SANs", fmt.Sprint(c.IPs), fmt.Sprint(want.IPs))
	eq(t, "expired", c.Expired, want.State == "expired")
	days := int(time.Until(want.NotAfter).Hours() / 24)
	if d := c.DaysLeft - days; d < -1 || d > 1 {
		t.Errorf("days_left %d, want about %d", c.DaysLeft, days)
	}
	if !c.SelfSigned || r.Verified || len(r.Chain) != 1 {
		t.Errorf("self-signed %v verified %v chain %d: want a self-signed, unverified chain of 1", c.SelfSigned, r.Verified, len(r.Chain))
	}
}

func tlsCertCases(t *testing.T) []probetest.Case {
	var cases []probetest.Case
	states := map[string]bool{}
	for _, h := range env.m.Hosts {
		for _, c := range h.Certificates {
			states[c.State] = true
			cases = append(cases, probetest.Case{Name: fmt.Sprintf("%s/%s:%d-%s", probetest.Success, h.IP, c.Ports[0], c.State),
				Req: req(h.IP, map[string]any{"port": c.Ports[0]}), Check: func(t *testing.T, o probetest.Outcome) { checkCert(t, o, c) }})
		}
	}
	if !states["valid"] || !states["expiring"] || !states["expired"] {
		t.Fatalf("the lab's certificates are not valid, expiring and expired: %v", states)
	}
	ld := ldapHost(t)
	cases = append(cases, probetest.Case{Name: probetest.Success + "/ldap-starttls", Req: req(ld.IP, map[string]any{"port": 389, "starttls": "ldap"}),
		Check: func(t *testing.T, o probetest.Outcome) { checkCert(t, o, ld.Certificates[0]) }})
	h, _ := httpsHost(t)
	return append(cases,
		probetest.Case{Name: probetest.BadCreds, NA: "a TLS handshake uses no credentials"},
		probetest.Case{Name: probetest.Stalled, Req: req(stall(t), map[string]any{"port": 443, "timeout": "500ms"}), WantCode: probe.CodeTimeout},
		probetest.Case{Name: probetest.WrongProtocol, Req: req(wrong(t), map[string]any{"port": 443}), WantCode: probe.CodeProtocol},
		probetest.Case{Name: probetest.WrongProtocol + "/starttls", Req: req(wrong(t), map[string]any{"port": 389, "starttls": "ldap"}), WantCode: probe.CodeProtocol},
		probetest.Case{Name: probetest.Cancel, Req: req(stall(t), map[string]any{"port": 443}), CancelAfter: 200 * time.Millisecond, WantCode: probe.CodeCanceled},
		// an endless talker cannot make a handshake grow: it fails as garbage, at once
		probetest.Case{Name: probetest.Oversize, Req: req(stream(t), map[string]any{"port": 443, "timeout": "5s"}), WantCode: probe.CodeProtocol},
		deny(t, h.IP, map[string]any{"port": 443}),
	)
}
