package correlation

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/outpost-dev/outpost/libs/api/cmdb"
	"github.com/outpost-dev/outpost/libs/clock"
)

// ciBinder is the CI binding stage: it finds the CMDB CI of a node by name or IP address
// through svc.cmdb.ls (search is a prefix of a name or IP; only an exact match binds), and
// remembers each answer — found or not, or the CMDB unreachable — for CMDBCacheTTL, so an
// event storm costs one lookup per node.
type ciBinder struct {
	nc    *nats.Conn
	clock clock.Clock
	on    bool
	wait  time.Duration
	ttl   time.Duration

	mu    sync.Mutex
	known map[string]boundCI
}

type boundCI struct {
	id, class string
	until     time.Time
}

func newCIBinder(nc *nats.Conn, clk clock.Clock, cfg Config) *ciBinder {
	return &ciBinder{nc: nc, clock: clk, on: cfg.CMDBLookup, wait: cfg.CMDBTimeout, ttl: cfg.CMDBCacheTTL, known: map[string]boundCI{}}
}

// bind returns the CI id and class of node, or empty strings.
func (b *ciBinder) bind(ctx context.Context, node string) (string, string) {
	if !b.on || node == "" {
		return "", ""
	}
	now := b.clock.Now()
	b.mu.Lock()
	k, ok := b.known[node]
	b.mu.Unlock()
	if ok && now.Before(k.until) {
		return k.id, k.class
	}
	k = boundCI{until: now.Add(b.ttl)}
	rctx, cancel := context.WithTimeout(ctx, b.wait)
	resp, err := cmdb.List.Call(rctx, b.nc, cmdb.ListRequest{Search: node, Limit: 20})
	cancel()
	if err == nil {
		for _, ci := range resp.Items {
			if matches(ci, node) {
				k.id, k.class = ci.ID, ci.Class
				break
			}
		}
	}
	b.mu.Lock()
	if len(b.known) > 100_000 {
		b.known = map[string]boundCI{}
	}
	b.known[node] = k
	b.mu.Unlock()
	return k.id, k.class
}

// matches: the CI's name, or an address attribute, is the node.
// Addresses and adapters are not what an alert is about: the device that has them is.
func matches(ci cmdb.CI, node string) bool {
	if ci.Class == "ip_address" || ci.Class == "network_adapter" {
		return false
	}
	if strings.EqualFold(ci.Name, node) {
		return true
	}
	for _, attr := range []string{"ip_address", "ip", "fqdn", "host_name"} {
		if v, ok := ci.Attributes[attr]; ok && strings.EqualFold(fmt.Sprint(v), node) {
			return true
		}
	}
	return false
}
