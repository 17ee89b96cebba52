package agents

import (
	"testing"

	"github.com/outpost-dev/outpost/libs/api"
	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
)

// The service serves exactly the ops of its contract (libs/api/agents), with its types.
func TestEndpointsMatchContract(t *testing.T) {
	if err := api.CheckEndpoints(agentsapi.Service, (&Service{}).endpoints()); err != nil {
		t.Error(err)
	}
}
