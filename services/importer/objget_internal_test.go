package importer

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// readObject reads back what ObjectStore.Put wrote, byte for byte, for objects of no
// chunk, one, and many more than it fetches at once; a missing object is an error.
func TestReadObject(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "objget-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("objget-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	objs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "objget-test"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte("host,serial\nweb01,SN1\n")},
		{"many chunks", random(128*1024*(3*objFetch+1) + 5)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := objs.Put(ctx, jetstream.ObjectMeta{Name: c.name}, bytes.NewReader(c.data)); err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := readObject(ctx, js, objs, c.name, &got); err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got.Bytes(), c.data) {
				t.Fatalf("read %d bytes, want the %d put", got.Len(), len(c.data))
			}
		})
	}
	if err := readObject(ctx, js, objs, "never-uploaded", &bytes.Buffer{}); err == nil {
		t.Error("reading an object never put: no error")
	}
}
