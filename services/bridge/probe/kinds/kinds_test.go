package kinds_test

import (
	"context"
	"slices"
	"testing"

	"github.com/outpost-dev/outpost/libs/probes/catalog"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/kinds"
)

// The bridge carries exactly the kinds of the table in libs (libs/probes/catalog), each
// with the table's spec (capability, credential types, params), in the same order: a kind
// registered here and not there, or the reverse, fails.
func TestKindsMatchTheCatalog(t *testing.T) {
	var registered []string
	for _, f := range kinds.All() {
		registered = append(registered, f.Spec().Kind)
	}
	if want := catalog.Kinds(); !slices.Equal(registered, want) {
		t.Fatalf("the bridge registers %v, the catalog (libs/probes/catalog) lists %v: add the kind to both, in the same place", registered, want)
	}
	for _, f := range kinds.All() {
		got := f.Spec()
		want, _ := catalog.Lookup(got.Kind)
		if got.Capability != want.Capability || !slices.Equal(got.Credentials, want.Credentials) || got.Description != want.Description {
			t.Errorf("%s: the factory's spec %+v differs from the catalog's %+v: return the contract package's Spec", got.Kind, got, want)
		}
	}
}

// Every kind creates a runner from its default config and refuses a config of another type.
func TestCreate(t *testing.T) {
	for _, f := range kinds.All() {
		typ := f.Spec().Kind
		if _, err := f.Create(context.Background(), probe.Settings{}, f.DefaultConfig()); err != nil {
			t.Errorf("%s: create with the default config: %v", typ, err)
		}
		if _, err := f.Create(context.Background(), probe.Settings{}, struct{}{}); err == nil {
			t.Errorf("%s: create accepted a config of the wrong type", typ)
		}
	}
}
