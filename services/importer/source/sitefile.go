package source

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"

	api "github.com/outpost-dev/outpost/libs/api/importer"
	"github.com/outpost-dev/outpost/libs/probes/fileread"
)

// SiteFileOptions are how a site file source's file is read once spooled.
func SiteFileOptions(def api.Source) api.FileOptions {
	o := api.FileOptions{Format: def.Params["format"], Sheet: def.Params["sheet"], RecordPath: def.Params["record_path"],
		HeaderRow: intParam(def.Params, "header_row", 0)}
	if f, err := DetectFormat(def.Params["path"], o.Format); err == nil {
		o.Format = f
	}
	return o
}

// SpoolSiteFile copies a file on a site host into f with file_read probes of chunk_bytes
// each (every probe streams its part in chunks, placed by offset: a part read twice
// writes the same bytes), checking each part against the SHA-256 the bridge computed.
// The file is then read like an upload, from disk: memory does not grow with it.
func SpoolSiteFile(ctx context.Context, def api.Source, p Prober, f *os.File) (int64, error) {
	path := def.Params["path"]
	step := int64(intParam(def.Params, "chunk_bytes", 4<<20))
	var off int64
	for {
		params := fileread.Params{Path: path, Offset: off, MaxBytes: step, Encoding: "base64"}
		final, err := p.Probe(ctx, fileread.Kind, "", params, func(c Chunk) error {
			var ch fileread.Chunk
			if err := json.Unmarshal(c.Result.Data, &ch); err != nil {
				return fmt.Errorf("file_read chunk: %w", err)
			}
			return writeChunk(f, ch)
		})
		if err != nil {
			return off, err
		}
		if err := FinalError(final); err != nil {
			return off, err
		}
		var res fileread.Result
		if err := json.Unmarshal(final.Data, &res); err != nil {
			return off, fmt.Errorf("file_read result: %w", err)
		}
		if res.Content != nil {
			if err := writeChunk(f, *res.Content); err != nil {
				return off, err
			}
		}
		if res.Read > 0 && res.SHA256 != "" {
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, off, res.Read)); err != nil {
				return off, err
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != res.SHA256 {
				return off, fmt.Errorf("%s bytes %d-%d: SHA-256 %s, the bridge read %s (the file changed while read?)", path, off, off+res.Read, got, res.SHA256)
			}
		}
		off += res.Read
		if res.Read == 0 || off >= res.Size {
			return off, f.Sync()
		}
	}
}

func writeChunk(f *os.File, ch fileread.Chunk) error {
	b := []byte(ch.Data)
	if ch.Encoding == "base64" {
		var err error
		if b, err = base64.StdEncoding.DecodeString(ch.Data); err != nil {
			return fmt.Errorf("file_read chunk at %d: %w", ch.Offset, err)
		}
	}
	_, err := f.WriteAt(b, ch.Offset)
	return err
}
