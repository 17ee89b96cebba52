package cmdb

import (
	"testing"

	"github.com/outpost-dev/outpost/libs/api"
	cmdbapi "github.com/outpost-dev/outpost/libs/api/cmdb"
)

// The service serves exactly the ops of its contract (libs/api/cmdb), with its types.
func TestEndpointsMatchContract(t *testing.T) {
	if err := api.CheckEndpoints(cmdbapi.Service, (&service{}).endpoints()); err != nil {
		t.Error(err)
	}
}
