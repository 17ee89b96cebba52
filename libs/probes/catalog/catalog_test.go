package catalog_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/libs/probes/catalog"
)

// Every kind of the table is complete: a unique name, a capability, credential types that
// exist, a documented params schema (every field described) and result types that marshal.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	for _, s := range catalog.All() {
		if s.Kind == "" || seen[s.Kind] {
			t.Errorf("kind %q: empty or listed twice", s.Kind)
		}
		seen[s.Kind] = true
		if s.Capability == "" || s.Description == "" {
			t.Errorf("%s: no capability or description", s.Kind)
		}
		for _, c := range s.Credentials {
			if !slices.Contains(envelope.CredentialTypes, c) {
				t.Errorf("%s takes credential type %q, which is not a credential type", s.Kind, c)
			}
		}
		sch := s.ParamsSchema()
		if sch.Type != "object" || sch.AdditionalProperties != false {
			t.Errorf("%s: params schema is not a closed object", s.Kind)
		}
		for name, p := range sch.Properties {
			if p.Description == "" {
				t.Errorf("%s: params.%s has no doc tag", s.Kind, name)
			}
		}
		if err := s.ValidateParams(nil); err != nil && len(sch.Required) == 0 {
			t.Errorf("%s: empty params refused although nothing is required: %v", s.Kind, err)
		}
		for _, v := range []any{s.Params, s.Result, s.Chunk} {
			if _, err := json.Marshal(v); err != nil {
				t.Errorf("%s: %T does not marshal: %v", s.Kind, v, err)
			}
		}
		if c, _ := catalog.Lookup(s.Kind); c.Kind != s.Kind || catalog.Capability(s.Kind) != s.Capability {
			t.Errorf("%s: lookup disagrees with the table", s.Kind)
		}
	}
	if catalog.Capability("nope") != "" || catalog.CredentialTypes("nope") != nil {
		t.Error("an unknown kind has a capability or credential types")
	}
	if got := catalog.CredentialTypes("ssh_exec"); !slices.Equal(got, []string{envelope.CredSSH}) {
		t.Errorf("ssh_exec takes %v", got)
	}
}
