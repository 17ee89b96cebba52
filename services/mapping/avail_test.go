package mapping

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	agentsapi "github.com/outpost-dev/outpost/libs/api/agents"
	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/page"
)

// A hub that restarts resumes its mappings before its other services answer (the CI run
// that found it: the resumed map failed on "service agents is not running"). The mapping
// waits for them; an error retrying cannot fix is returned at once.
func TestWhenAvailable(t *testing.T) {
	s := testService(t, "r1", clock.Real())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// the agents service starts while the mapping already asks
	go func() {
		time.Sleep(400 * time.Millisecond)
		svc, err := bus.AddService(ctx, s.deps.NC, bus.ServiceConfig{Name: agentsapi.SiteList.Service, Version: "0.0.1",
			Endpoints: map[string]bus.Endpoint{agentsapi.SiteList.Name: agentsapi.SiteList.Handle(
				func(context.Context, page.Request) (agentsapi.SiteListReply, error) {
					return agentsapi.SiteListReply{Sites: []agentsapi.Site{{Name: "lab"}}}, nil
				})}})
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { _ = svc.Stop() })
	}()
	sites, err := bus.WhenAvailable(ctx, availWait, s.sites)
	if err != nil || len(sites) != 1 || sites[0].Name != "lab" {
		t.Fatalf("sites once the agents service is up: %+v, %v", sites, err)
	}

	calls := 0
	_, err = bus.WhenAvailable(ctx, availWait, func(context.Context) (int, error) {
		calls++
		return 0, bus.Errorf(http.StatusBadRequest, "bad")
	})
	var se *bus.ServiceError
	if !errors.As(err, &se) || se.Code != http.StatusBadRequest || calls != 1 {
		t.Errorf("a bad request: %d calls, error %v; want one call and the error", calls, err)
	}

	short, stop := context.WithCancel(ctx)
	stop()
	if _, err := bus.WhenAvailable(short, availWait, func(context.Context) (int, error) {
		return 0, bus.Errorf(http.StatusServiceUnavailable, "down")
	}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while a service is down: %v, want the cancellation", err)
	}
}
