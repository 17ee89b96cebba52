package bus_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// startCluster starts a 3-node JetStream cluster in process on loopback and returns its
// client URLs, comma-separated.
func startCluster(t *testing.T) string {
	t.Helper()
	free := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	routes := []int{free(), free(), free()}
	var urls string
	var servers []*server.Server
	for i := range 3 {
		var rs []*url.URL
		for j, p := range routes {
			if j != i {
				rs = append(rs, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
			}
		}
		o := &server.Options{ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "test", Host: "127.0.0.1", Port: routes[i]}, Routes: rs, NoLog: true, NoSigs: true}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("n%d not ready", i+1)
		}
		servers = append(servers, s)
		if urls != "" {
			urls += ","
		}
		urls += s.ClientURL()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, s := range servers {
			if !s.JetStreamIsCurrent() {
				ok = false
			}
		}
		if ok && servers[0].JetStreamIsClustered() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cluster did not form")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return urls
}

// TestWithReplicasOnACluster: streams, buckets and object stores a service creates get the
// deployment's replicas, and two replicas creating the same ones at once both succeed (the
// server may leave one such create unanswered: WithReplicas tries it again).
func TestWithReplicasOnACluster(t *testing.T) {
	urls := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var jss []jetstream.JetStream
	for range 2 {
		nc, err := nats.Connect(urls)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		jss = append(jss, bus.WithReplicas(js, 3))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, js := range jss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: fmt.Sprintf("S%d", i), Subjects: []string{fmt.Sprintf("s%d.>", i)}}); err != nil {
					errs <- fmt.Errorf("stream S%d: %w", i, err)
				}
				if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: fmt.Sprintf("kv%d", i)}); err != nil {
					errs <- fmt.Errorf("kv%d: %w", i, err)
				}
			}
			if _, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "objs"}); err != nil {
				errs <- fmt.Errorf("objs: %w", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, name := range []string{"S0", "S3", "KV_kv0", "KV_kv3", "OBJ_objs"} {
		st, err := jss[0].Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s: %d replicas, want 3", name, r)
		}
	}
	// buckets are read from their leader: a write is seen by the next read, whichever
	// process makes it
	for _, name := range []string{"KV_kv0", "KV_kv3"} {
		st, _ := jss[1].Stream(ctx, name)
		if st.CachedInfo().Config.AllowDirect {
			t.Errorf("%s: direct gets on", name)
		}
	}
	kvw, err := jss[0].KeyValue(ctx, "kv1")
	if err != nil {
		t.Fatal(err)
	}
	kvr, err := jss[1].KeyValue(ctx, "kv1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		k := fmt.Sprintf("k%d", i)
		if _, err := kvw.Put(ctx, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := kvr.Get(ctx, k); err != nil {
			t.Fatalf("read after write of %s: %v", k, err)
		}
	}
	// a configuration that names its replicas keeps them; 1 is the default everywhere
	st, err := jss[0].CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "TWO", Subjects: []string{"two.>"}, Replicas: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != 2 {
		t.Errorf("TWO: %d replicas, want 2", r)
	}
}
