package bridge_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-dev/outpost/services/bridge"
)

// Plaintext to a remote hub is refused unless the operator insists; loopback stays allowed.
func TestConfigHubTransport(t *testing.T) {
	cases := []struct {
		name     string
		hub      string
		insecure bool
		proxy    string
		want     string // "" = valid
	}{
		{"tls to a remote hub", "tls://hub.example:4222", false, "", ""},
		{"wss to a remote hub through a proxy", "wss://hub.example:443", false, "http://u:pw@proxy.example:3128", ""},
		{"nats to loopback (dev)", "nats://127.0.0.1:4222", false, "", ""},
		{"ws to localhost (dev)", "ws://localhost:8080", false, "", ""},
		{"nats to a remote hub", "nats://10.1.2.3:4222", false, "", "plaintext to a hub that is not on loopback"},
		{"ws to a remote hub", "ws://hub.example:80", false, "", "use tls://HOST:PORT or wss://HOST:PORT"},
		{"one remote plaintext URL of two", "tls://a.example:4222,nats://b.example:4222", false, "", "nats://b.example:4222"},
		{"nats to a remote hub, insisted", "nats://10.1.2.3:4222", true, "", ""},
		{"a proxy that is not http://", "wss://hub.example:443", false, "socks5://proxy.example:1080", "want http://"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := bridge.DefaultConfig()
			c.Hub, c.Site, c.Name, c.InsecurePlaintext, c.Proxy = tc.hub, "dc1", "br1", tc.insecure, tc.proxy
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), ":pw@") {
				t.Fatalf("the proxy password is in the error: %v", err)
			}
		})
	}
}

// collect.batch is read from the config file and validated with the rest.
func TestConfigCollectBatch(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       string // "" = valid
		linger     time.Duration
	}{
		{"defaults", "collect: {syslog: 127.0.0.1:514}", "", 0},
		{"set", "collect: {syslog: 127.0.0.1:514, batch: {max_events: 200, max_bytes: 65536, linger: 10ms}}", "", 10 * time.Millisecond},
		{"over the message bound", "collect: {batch: {max_events: 5000}}", "collect.batch.max_events 5000", 0},
		{"linger too long", "collect: {batch: {linger: 1m}}", "collect.batch.linger 1m0s", time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := bridge.DefaultConfig()
			if err := yaml.Unmarshal([]byte(tc.yaml), &c); err != nil {
				t.Fatal(err)
			}
			c.Hub, c.Site, c.Name = "nats://127.0.0.1:4222", "dc1", "br1"
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
			if c.Collect.Batch.Linger != tc.linger {
				t.Errorf("linger %s, want %s", c.Collect.Batch.Linger, tc.linger)
			}
		})
	}
}
