package tcpscan

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// Both engines find the same open and closed ports on IPv4 and IPv6 loopback listeners.
func TestEngines(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ap := netip.MustParseAddrPort(ln.Addr().String())
		for _, engine := range []string{"raw", "dial"} {
			t.Run(network+"/"+engine, func(t *testing.T) {
				f := NewFactory()
				cfg := f.DefaultConfig().(Config)
				cfg.Engine = engine
				cfg.Rate = 0
				set := probe.Settings{Allowed: func(ip net.IP) bool { return ip.IsLoopback() }}
				r, err := f.Create(context.Background(), set, cfg)
				if err != nil {
					t.Fatal(err)
				}
				ports := fmt.Sprintf("%d,%d-%d", ap.Port(), ap.Port()+1, ap.Port()+5)
				params, _ := json.Marshal(map[string]any{"targets": ap.Addr().String(), "ports": ports})
				res, err := r.Run(context.Background(), probe.Request{Params: params}, nil)
				if err != nil {
					t.Fatal(err)
				}
				s := res.(*Summary)
				if len(s.Hosts) != 1 || fmt.Sprint(s.Hosts[0].Open) != fmt.Sprintf("[%d]", ap.Port()) || s.Closed+s.Filtered != 5 {
					t.Errorf("%s engine on %s: %+v", s.Engine, ap, s.Hosts)
				}
				if (engine == "raw") != (s.Engine == "raw") {
					t.Errorf("engine %s ran as %s", engine, s.Engine)
				}
			})
		}
	}
}
