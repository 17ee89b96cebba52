package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// Uploads are written to the object store by putObject rather than ObjectStore.Put: Put
// publishes every chunk without waiting for the stream (up to the client's 4,000 pending
// acks, 500 MB of 128 KiB chunks), so the server buffered what the stream had not stored
// yet and the hub's memory grew with the file; a 1 GiB upload failed with "too many
// outstanding async published messages". putObject keeps at most uploadWindow chunks
// unacknowledged: memory stays flat whatever the file's size, and a slow disk slows the
// upload instead of failing it.
const (
	uploadChunk  = 128 * 1024 // the object store's default chunk size
	uploadWindow = 16         // chunks in flight: 2 MiB
	uploadAckMax = 2 * time.Minute
)

// putObject stores r as object name in bucket, in the object store's own layout (chunks on
// $O.<bucket>.C.<nuid>, then the object's info on $O.<bucket>.M.<base64url name>, as
// nats.go's Put writes them), so that ObjectStore.Get reads it and checks its digest. A
// failed upload leaves no chunks behind.
func putObject(ctx context.Context, js jetstream.JetStream, bucket, name, description string, r io.Reader) (*jetstream.ObjectInfo, error) {
	id := envelope.NewID() // the object's chunk subject token: unique, subject-safe
	chunkSubj := fmt.Sprintf("$O.%s.C.%s", bucket, id)
	var window []jetstream.PubAckFuture
	// purge removes the chunks stored so far, once those in flight are stored or failed.
	purge := func() {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, f := range window {
			select {
			case <-f.Ok():
			case <-f.Err():
			case <-pctx.Done():
			}
		}
		if st, err := js.Stream(pctx, "OBJ_"+bucket); err == nil {
			_ = st.Purge(pctx, jetstream.WithPurgeSubject(chunkSubj))
		}
	}
	// await waits for the oldest chunks until at most keep are unacknowledged.
	await := func(keep int) error {
		for len(window) > keep {
			f := window[0]
			window = window[1:]
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("chunk not stored: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(uploadAckMax):
				return fmt.Errorf("chunk not stored: no answer from the stream within %s", uploadAckMax)
			}
		}
		return nil
	}
	h := sha256.New()
	buf := make([]byte, uploadChunk)
	var size uint64
	var chunks uint32
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := await(uploadWindow - 1); err != nil {
				purge()
				return nil, err
			}
			h.Write(buf[:n])
			// Each chunk gets its own copy: the client may still hold the previous one
			// while it is resent.
			data := make([]byte, n)
			copy(data, buf[:n])
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: chunkSubj, Data: data}, jetstream.WithStallWait(uploadAckMax))
			if err != nil {
				purge()
				return nil, fmt.Errorf("chunk not sent: %w", err)
			}
			window = append(window, f)
			size += uint64(n)
			chunks++
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			purge()
			return nil, rerr
		}
	}
	if err := await(0); err != nil {
		purge()
		return nil, err
	}
	sum := h.Sum(nil)
	info := &jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Description: description, Opts: &jetstream.ObjectMetaOptions{ChunkSize: uploadChunk}},
		Bucket:     bucket, NUID: id, Size: size, Chunks: chunks, ModTime: time.Now().UTC(),
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(sum),
	}
	data, err := json.Marshal(info)
	if err != nil {
		purge()
		return nil, err
	}
	meta := nats.NewMsg(fmt.Sprintf("$O.%s.M.%s", bucket, base64.URLEncoding.EncodeToString([]byte(name))))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Data = data
	if _, err := js.PublishMsg(ctx, meta); err != nil {
		purge()
		return nil, fmt.Errorf("object info not stored: %w", err)
	}
	return info, nil
}
