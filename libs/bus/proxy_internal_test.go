package bus

import (
	"strings"
	"testing"
)

// Which proxy the environment picks for a hub address: HTTPS_PROXY for TLS hub URLs,
// HTTP_PROXY for plaintext ones, NO_PROXY and loopback exempt; an explicit proxy wins.
func TestProxyChoice(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		cfg     ConnectConfig
		addr    string
		want    string // "" = direct
		wantErr string
	}{
		{"HTTPS_PROXY for tls://", map[string]string{"HTTPS_PROXY": "http://proxy.example:3128"},
			ConnectConfig{URL: "tls://hub.example:4222", ProxyFromEnvironment: true}, "hub.example:4222", "http://proxy.example:3128", ""},
		{"lower-case https_proxy for wss://", map[string]string{"https_proxy": "http://u:p@proxy.example:3128"},
			ConnectConfig{URL: "wss://hub.example:443", ProxyFromEnvironment: true}, "hub.example:443", "http://u:p@proxy.example:3128", ""},
		{"NO_PROXY exempts the hub", map[string]string{"HTTPS_PROXY": "http://proxy.example:3128", "NO_PROXY": ".example"},
			ConnectConfig{URL: "tls://hub.example:4222", ProxyFromEnvironment: true}, "hub.example:4222", "", ""},
		{"loopback is never proxied from the environment", map[string]string{"HTTPS_PROXY": "http://proxy.example:3128"},
			ConnectConfig{URL: "tls://127.0.0.1:4222", ProxyFromEnvironment: true}, "127.0.0.1:4222", "", ""},
		{"HTTP_PROXY for a plaintext URL", map[string]string{"HTTPS_PROXY": "http://s.example:1", "HTTP_PROXY": "http://p.example:2"},
			ConnectConfig{URL: "nats://hub.example:4222", ProxyFromEnvironment: true}, "hub.example:4222", "http://p.example:2", ""},
		{"explicit proxy wins and applies to loopback", map[string]string{"HTTPS_PROXY": "http://proxy.example:3128"},
			ConnectConfig{URL: "wss://127.0.0.1:443", Proxy: "http://127.0.0.1:8888"}, "127.0.0.1:443", "http://127.0.0.1:8888", ""},
		{"an https:// proxy from the environment is refused", map[string]string{"HTTPS_PROXY": "https://proxy.example:3128"},
			ConnectConfig{URL: "tls://hub.example:4222", ProxyFromEnvironment: true}, "hub.example:4222", "", "want http://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} {
				t.Setenv(k, tc.env[k])
			}
			d, err := newProxyDialer(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			p, err := d.proxyFor(tc.addr)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if p != nil {
				got = p.String()
			}
			if got != tc.want {
				t.Fatalf("proxy %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseProxy(t *testing.T) {
	cases := []struct{ raw, want string }{
		{"http://proxy.example:3128", ""},
		{"http://user:pw@proxy.example", ""},
		{"socks5://proxy.example:1080", "want http://"},
		{"http://", "no host"},
		{"http://proxy.example:3128/path", "no path"},
		{"http://user:s3cret@proxy.example:3128/x", "//redacted@"},
	}
	for _, tc := range cases {
		_, err := ParseProxy(tc.raw)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ParseProxy(%q) = %v, want %q", tc.raw, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("ParseProxy(%q) shows the password: %v", tc.raw, err)
		}
	}
}
