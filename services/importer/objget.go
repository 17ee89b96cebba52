package importer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// readObject copies an object of the object store to w, holding at most objFetch chunks
// in memory. ObjectStore.Get pushes every chunk as fast as the server reads them, and the
// client buffers up to 64 MiB of them behind a slower writer: while a 1 GiB upload was
// spooled, that buffer alone was a third of the hub's memory budget. The object's size and
// digest are checked as Get checks them.
func readObject(ctx context.Context, js jetstream.JetStream, objs jetstream.ObjectStore, name string, w io.Writer) error {
	info, err := objs.GetInfo(ctx, name)
	if err != nil {
		return err
	}
	if info.Size == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, "OBJ_"+info.Bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{fmt.Sprintf("$O.%s.C.%s", info.Bucket, info.NUID)}})
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	h := sha256.New()
	var size uint64
	var chunks uint32
	for chunks < info.Chunks {
		// No more than are left: a fetch waits until it has what it asked for.
		batch, err := cons.Fetch(min(objFetch, int(info.Chunks-chunks)), jetstream.FetchMaxWait(30*time.Second))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			chunks++
			size += uint64(len(m.Data()))
			h.Write(m.Data())
			if _, err := w.Write(m.Data()); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if got == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("read %s: no chunk within 30s after %d of %d", name, chunks, info.Chunks)
		}
	}
	if size != info.Size {
		return fmt.Errorf("read %s: %d bytes, the object has %d", name, size, info.Size)
	}
	if want := "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil)); want != info.Digest {
		return fmt.Errorf("read %s: digest %s, the object's is %s (the upload is damaged: upload the file again)", name, want, info.Digest)
	}
	return nil
}

// objFetch is how many chunks (128 KiB each by default) readObject asks for at once.
const objFetch = 8
