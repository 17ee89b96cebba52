package importer

import (
	"testing"

	"github.com/outpost-dev/outpost/libs/api"
)

// The service serves exactly the ops of its contract (libs/api/importer), with its types.
func TestEndpointsMatchContract(t *testing.T) {
	if err := api.CheckEndpoints(Service, (&service{}).endpoints()); err != nil {
		t.Error(err)
	}
}
