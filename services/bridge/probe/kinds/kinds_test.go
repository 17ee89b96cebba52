package kinds_test

import (
	"context"
	"testing"

	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
)

// Every kind has a unique type, a capability, a schema and creates a runner from its
// default config.
func TestAll(t *testing.T) {
	seen := map[string]bool{}
	caps := map[string]string{"echo": "echo", "tcp_scan": "tcp", "banner": "tcp", "http_get": "http", "tls_cert": "tls",
		"ssh_exec": "ssh", "snmp_get": "snmp", "snmp_walk": "snmp", "ldap_search": "ldap", "sql_query": "sql",
		"http_request": "http", "file_read": "file"}
	for _, f := range kinds.All() {
		typ := f.Type()
		if seen[typ] {
			t.Errorf("kind %s registered twice", typ)
		}
		seen[typ] = true
		if want, ok := caps[typ]; !ok || f.Capability() != want {
			t.Errorf("%s: capability %q, want %q", typ, f.Capability(), want)
		}
		if s := f.Schema(); s.Description == "" || (typ != "echo" && len(s.Params) == 0) {
			t.Errorf("%s: schema without description or params", typ)
		}
		if _, err := f.Create(context.Background(), probe.Settings{}, f.DefaultConfig()); err != nil {
			t.Errorf("%s: create with the default config: %v", typ, err)
		}
		if _, err := f.Create(context.Background(), probe.Settings{}, struct{}{}); err == nil {
			t.Errorf("%s: create accepted a config of the wrong type", typ)
		}
	}
	for typ := range caps {
		if !seen[typ] {
			t.Errorf("kind %s is not registered", typ)
		}
	}
}
