package cli

import (
	"testing"

	"github.com/outpost-dev/outpost/libs/api/apitest"
)

// The CLI reads the API through the contract types; it declares no shape of its own.
func TestNoMirroredWireTypes(t *testing.T) {
	found, err := apitest.MirrorTypes(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s: decode into the contract type (libs/api/<service>) instead", f)
	}
}
