// Package fileread is the contract of the file_read probe kind: read a file under a
// directory the bridge allows (its config's allowed_dirs), content streamed in chunks.
package fileread

import (
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
)

// Kind and the capability a site grants for it.
const (
	Kind       = "file_read"
	Capability = "file"
)

// Spec of the file_read kind.
var Spec = probes.Spec{
	Kind: Kind, Capability: Capability,
	Description: "Read a file under a directory the bridge allows; content streamed in chunks.",
	Params:      Params{}, Result: Result{}, Chunk: Chunk{},
}

// Params of a file_read probe.
type Params struct {
	Path     string `json:"path" required:"true" doc:"absolute path under an allowed directory"`
	Offset   int64  `json:"offset,omitempty" min:"0" default:"0" doc:"start reading here"`
	MaxBytes int64  `json:"max_bytes,omitempty" min:"0" default:"16777216" doc:"read at most this much (truncated beyond)"`
	Encoding string `json:"encoding,omitempty" enum:"auto,base64" default:"auto" doc:"auto: text when valid UTF-8, else base64"`
}

// Chunk is one streamed piece of content.
type Chunk struct {
	Path     string `json:"path"`
	Offset   int64  `json:"offset"`
	Encoding string `json:"encoding"` // text or base64
	Data     string `json:"data"`
	Bytes    int    `json:"bytes"`
}

// Result of a file_read probe (its final chunk).
type Result struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	Mode      string    `json:"mode"`
	ModTime   time.Time `json:"mod_time"`
	Offset    int64     `json:"offset"`
	Read      int64     `json:"read"`
	Truncated bool      `json:"truncated"`
	SHA256    string    `json:"sha256"`
	Chunks    int       `json:"chunks"`
	// Content carries the content when the caller takes no stream (within one chunk).
	Content *Chunk `json:"content,omitempty"`
}
