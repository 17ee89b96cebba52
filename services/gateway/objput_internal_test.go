package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

// failingReader gives n bytes, then an error: an upload cut off mid-file.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection reset by peer")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

// putObject writes what ObjectStore.Get reads back byte for byte (digest checked), for
// files of no chunk, part of one, and many more than its window; a read error mid-file
// stores nothing and leaves no chunk behind.
func TestPutObjectBoundedUpload(t *testing.T) {
	srv, err := bus.StartServer(bus.ServerConfig{Name: "objput-test", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("objput-test")
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
	objs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads-test"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte("host,serial\nweb01,SN1\n")},
		{"one chunk exactly", random(uploadChunk)},
		{"many chunks, ragged end", random(uploadChunk*(2*uploadWindow+3) + 17)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Short reads, as a request body gives them.
			r := iotest.HalfReader(bytes.NewReader(c.data))
			info, err := putObject(ctx, js, "uploads-test", "obj-"+c.name, "file.csv", r)
			if err != nil {
				t.Fatalf("put: %v", err)
			}
			if info.Size != uint64(len(c.data)) {
				t.Errorf("info size %d, want %d", info.Size, len(c.data))
			}
			obj, err := objs.Get(ctx, "obj-"+c.name)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			got, err := io.ReadAll(obj)
			obj.Close()
			if err != nil {
				t.Fatalf("read back (digest checked at the end): %v", err)
			}
			if !bytes.Equal(got, c.data) {
				t.Fatalf("read back %d bytes, want the %d put", len(got), len(c.data))
			}
			st, err := objs.GetInfo(ctx, "obj-"+c.name)
			if err != nil || st.Description != "file.csv" {
				t.Errorf("info %+v %v: want the description file.csv", st, err)
			}
		})
	}

	t.Run("cut off mid-file", func(t *testing.T) {
		stream, err := js.Stream(ctx, "OBJ_uploads-test")
		if err != nil {
			t.Fatal(err)
		}
		before, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = putObject(ctx, js, "uploads-test", "obj-cut", "cut.csv", &failingReader{n: 5*uploadChunk + 3})
		if err == nil {
			t.Fatal("put of a body cut off: no error")
		}
		if _, err := objs.GetInfo(ctx, "obj-cut"); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Errorf("object of a failed put: %v, want not found", err)
		}
		after, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.State.Msgs != before.State.Msgs {
			t.Errorf("stream holds %d messages after the failed put, %d before: its chunks were left behind",
				after.State.Msgs, before.State.Msgs)
		}
	})
}
