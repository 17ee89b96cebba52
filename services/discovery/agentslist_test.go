package discovery

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/bus"
	"github.com/outpost-dev/outpost/libs/page"
)

// Sites and agents come from the agents service in cursor pages: discovery reads them all,
// so a site past the first page is found and every bridge of a site gets its credentials.
func TestAgentsListFollowsPages(t *testing.T) {
	ctx := context.Background()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "agents-pages", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("agents-pages")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var all []site
	for i := range 2500 {
		all = append(all, site{Name: fmt.Sprintf("site-%04d", i), Ranges: []string{"127.77.0.0/24"}})
	}
	calls := 0
	svc, err := bus.AddService(ctx, nc, bus.ServiceConfig{Name: "agents", Version: "0.1.0", Endpoints: map[string]bus.Endpoint{
		"site_ls": bus.JSON(func(_ context.Context, r page.Request) (any, error) {
			calls++
			items, next, err := page.Slice(all, r, func(s site) string { return s.Name }, strings.Compare)
			return map[string]any{"sites": items, "next_cursor": next}, err
		}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Stop()
	got, err := agentsList[site](ctx, nc, "site_ls", "sites")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all) || got[len(got)-1].Name != "site-2499" || calls != 3 {
		t.Fatalf("read %d sites in %d pages (last %v), want %d in 3", len(got), calls, got[len(got)-1], len(all))
	}
	s := &service{deps: Deps{NC: nc}}
	if st, err := s.site(ctx, "site-2400"); err != nil || st.Name != "site-2400" {
		t.Fatalf("a site on the third page: %v %v", st, err)
	}
}
