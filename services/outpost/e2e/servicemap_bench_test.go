package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	api "github.com/outpost-dev/outpost/libs/api/mapping"
	"github.com/outpost-dev/outpost/libs/lab"
)

// BenchmarkServiceMapLab: Service Mapping of a 50-application lab estate (web → app server
// → database, shared databases, a dead backend), every map started at once through the
// gateway and waited for, beside a discovery of the same hosts (the addresses the maps
// touched) — with `outpost up` and `outpost-bridge` as separate processes and the lab in
// this one, on a fresh hub each round (first maps: every CI created).
func BenchmarkServiceMapLab(b *testing.B) {
	const cidr, services = "127.77.184.0/23", 50
	l, err := lab.Start(context.Background(), lab.Config{Range: cidr, Hosts: 400, Seed: 7})
	if err != nil {
		b.Fatalf("lab: %v", err)
	}
	defer l.Close()
	m := l.Manifest()
	if len(m.AppServices) < services {
		b.Fatalf("the lab has %d app services, want %d", len(m.AppServices), services)
	}
	apps := m.AppServices[:services]
	h := startHub(b, b.TempDir())
	tok := h.addSite(b, "lab", cidr, true)
	br := startBridge(b, h, "lab", "br1", tok)
	h.waitStatus(b, "br1", "up")
	for _, lc := range m.StoreCredentials("lab") {
		h.mustAPI(b, "POST", "/api/v1/credentials", map[string]any{"name": lc.Name, "type": lc.Type, "site": "lab",
			"username": lc.Username, "secret": lc.Secret, "fields": lc.Fields}, nil)
	}
	for _, s := range apps {
		h.mustAPI(b, "POST", "/api/v1/services", map[string]any{"name": s.Name, "entry": s.Entry, "every": "0"}, nil)
	}
	token := h.token(b)
	b.ResetTimer()
	var mapWall, discWall time.Duration
	var probes, nodes, edges int
	var hosts []string
	var r discoveryRun
	for i := range b.N {
		t0 := time.Now()
		maps := make([]api.Detail, len(apps))
		errs := make([]error, len(apps))
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16) // the gateway answers a waiting map within 55 s: many at once, not all
		for k, s := range apps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				path := "/api/v1/services/" + s.Name + "/map?wait=true"
				if i > 0 {
					path = "/api/v1/services/" + s.Name + "/remap"
				}
				req, _ := http.NewRequest("POST", "http://"+h.http+path, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					errs[k] = err
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 {
					errs[k] = fmt.Errorf("%s: %d %s", s.Name, resp.StatusCode, body)
					return
				}
				errs[k] = json.Unmarshal(body, &maps[k])
			}()
		}
		wg.Wait()
		for k, err := range errs {
			if err == nil && (maps[k].Map == nil || maps[k].Service.State != api.ServiceMapped) {
				err = fmt.Errorf("%s: no map: %s %s", apps[k].Name, maps[k].Service.State, maps[k].Service.Error)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		mapWall = time.Since(t0)
		probes, nodes, edges, hosts = 0, 0, 0, nil
		for _, d := range maps {
			probes += d.Map.Probes
			nodes += len(d.Map.Nodes)
			edges += len(d.Map.Edges)
			for _, n := range d.Map.Nodes {
				if n.State == api.StateOK || n.State == api.StateUnreachable {
					hosts = append(hosts, n.IP)
				}
			}
		}
		slices.Sort(hosts)
		hosts = slices.Compact(hosts)
		ranges := make([]string, len(hosts))
		for k, ip := range hosts {
			ranges[k] = ip + "/32"
		}
		t1 := time.Now()
		var out struct {
			Run string `json:"run"`
		}
		h.mustAPI(b, "POST", "/api/v1/discovery/runs", map[string]any{"site": "lab", "ranges": ranges}, &out)
		r = waitDiscovery(b, h, out.Run, 10*time.Minute)
		discWall = time.Since(t1)
		if r.State != "completed" {
			b.Fatalf("discovery %s: %s %s", out.Run, r.State, r.Reason)
		}
	}
	b.StopTimer()
	b.ReportMetric(mapWall.Seconds(), "s/map-50")
	b.ReportMetric(discWall.Seconds(), "s/discovery")
	b.ReportMetric(float64(len(hosts)), "hosts")
	b.ReportMetric(float64(probes), "probes")
	b.ReportMetric(float64(nodes), "nodes")
	b.ReportMetric(float64(edges), "edges")
	b.ReportMetric(float64(r.Counters.Classified), "classified")
	b.ReportMetric(float64(procKB(b, h.proc.pid(), "VmHWM"))/1024, "hub-peak-RSS-MB")
	b.ReportMetric(float64(procKB(b, br.proc.pid(), "VmHWM"))/1024, "bridge-peak-RSS-MB")
	b.ReportMetric(0, "ns/op")
}
