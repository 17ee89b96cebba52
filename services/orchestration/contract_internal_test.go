package orchestration

import (
	"context"
	"sync"
	"testing"

	"github.com/outpost-dev/outpost/libs/api"
)

// The service serves exactly the ops of its contract (libs/api/orchestration), with its types.
func TestEndpointsMatchContract(t *testing.T) {
	if err := api.CheckEndpoints(Service, (&service{}).endpoints(context.Background(), &sync.WaitGroup{})); err != nil {
		t.Error(err)
	}
}
