package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// `outpost probe --kind K --help-params` prints the kind's params from its contract, with
// no hub: types, defaults, limits, required fields; -o json prints the JSON Schema.
func TestProbeHelpParams(t *testing.T) {
	for _, spec := range catalog.All() {
		code, out, errs := run(t, "probe", "--kind", spec.Kind, "--help-params")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", spec.Kind, code, errs)
		}
		for _, name := range spec.ParamsSchema().Order() {
			if !strings.Contains(out, "\n  "+name+" (") {
				t.Errorf("%s: help does not list params.%s:\n%s", spec.Kind, name, out)
			}
		}
	}
	_, out, _ := run(t, "probe", "--kind", "ssh_exec", "--help-params")
	for _, want := range []string{"capability: ssh; credential types: ssh", "commands (list of string | object) [required; at least 1 item(s)]",
		"port (integer) [default 22; 0-65535]", "connect_timeout (duration) [default 15s]", "host_key_mismatch: "} {
		if !strings.Contains(out, want) {
			t.Errorf("ssh_exec help does not say %q:\n%s", want, out)
		}
	}
	code, out, _ := run(t, "probe", "--kind", "ldap_search", "--help-params", "-o", "json")
	var doc struct {
		Schema     string                     `json:"$schema"`
		Properties map[string]json.RawMessage `json:"properties"`
		Additional bool                       `json:"additionalProperties"`
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || doc.Schema == "" || doc.Properties["scope"] == nil || doc.Additional {
		t.Errorf("-o json: exit %d, %v: %s", code, err, out)
	}
	if code, _, errs := run(t, "probe", "--kind", "ssh", "--help-params"); code != 2 || !strings.Contains(errs, "ssh_exec") {
		t.Errorf("unknown kind: exit %d, %q; want 2 and the list of kinds", code, errs)
	}
}
