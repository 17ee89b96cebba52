package outbox

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/bus"
)

func hub(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{Name: "hub", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	nc, _ := srv.Connect("hub")
	t.Cleanup(func() { nc.Close(); srv.Shutdown() })
	js, _ := jetstream.New(nc)
	st, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"result.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

func msgs(t *testing.T, st jetstream.Stream) uint64 {
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Results stay on disk across a restart until the hub has them; a full outbox refuses more
// (and says so) instead of dropping anything; forwarding drains it, deduplicated by id.
func TestStoreAndForward(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o, err := Open(ctx, Config{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 16<<10)
	n := 0
	for ; !o.Full(); n++ {
		h := nats.Header{nats.MsgIdHdr: []string{fmt.Sprint("r", n)}}
		if err := o.Put(ctx, "result.test.dc1.echo", h, payload); err != nil {
			t.Fatalf("put %d: %v", n, err)
		}
	}
	if n < 60 || o.Pending() != int64(n) {
		t.Fatalf("stored %d (pending %d)", n, o.Pending())
	}
	// Over the limit with slack used up, Put refuses with ErrFull rather than evict.
	var full error
	for i := 0; i < 64 && full == nil; i++ {
		full = o.Put(ctx, "result.test.dc1.echo", nats.Header{nats.MsgIdHdr: []string{fmt.Sprint("x", i)}}, payload)
	}
	if !errors.Is(full, ErrFull) {
		t.Fatalf("want ErrFull past the limit, got %v", full)
	}
	stored := o.Pending()
	o.Close()

	// Restart: everything is still there.
	o, err = Open(ctx, Config{Dir: dir, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if o.Pending() != stored {
		t.Fatalf("after restart %d pending, want %d", o.Pending(), stored)
	}
	js, st := hub(t)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = o.Forward(fctx, js); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for o.Pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if o.Pending() != 0 || o.Full() {
		t.Fatalf("outbox not drained: %d pending", o.Pending())
	}
	if got := msgs(t, st); got != uint64(stored) {
		t.Fatalf("hub has %d results, want %d", got, stored)
	}
}
