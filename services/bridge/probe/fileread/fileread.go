// Package fileread is the file_read probe kind: read a file on the bridge's host (or a
// share mounted there) — only under the directories the kind's config allows, none by
// default. Symbolic links cannot lead out of an allowed directory (os.Root), only regular
// files are read (a FIFO or a device could block or never end), and the content is
// streamed through Emit in chunks up to max_bytes; the final data says how large the file
// is, how much was read, whether it was truncated, and the SHA-256 of what was read.
package fileread

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/fileread"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
)

// The contract of the kind (libs/probes/fileread): what a probe asks and what it answers.
type (
	Params = contract.Params
	Chunk  = contract.Chunk
	Result = contract.Result
)

// Config of file_read.
type Config struct {
	// AllowedDirs are the directories files may be read under (absolute). Empty: none.
	AllowedDirs []string `yaml:"allowed_dirs"`
	// MaxBytes bounds what one probe reads.
	MaxBytes int64 `yaml:"max_bytes"`
}

// Validate reports every problem of an operator's config.
func (c Config) Validate() error {
	var errs []error
	for i, d := range c.AllowedDirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("allowed_dirs[%d]: %q is not absolute: give the full path (e.g. /var/log)", i, d))
		}
	}
	if c.MaxBytes < 1 {
		errs = append(errs, fmt.Errorf("max_bytes: %d: want at least 1", c.MaxBytes))
	}
	return errors.Join(errs...)
}

type factory struct{}

// NewFactory returns the file_read kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec  { return contract.Spec }
func (factory) DefaultConfig() any { return Config{AllowedDirs: nil, MaxBytes: 256 << 20} }

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "file_read: config of type %T", cfg)
	}
	var dirs []string
	for _, d := range c.AllowedDirs {
		if !filepath.IsAbs(d) {
			return nil, probe.Errorf(probe.CodeBadParams, "file_read config: allowed directory %q is not absolute", d)
		}
		dirs = append(dirs, filepath.Clean(d))
	}
	c.AllowedDirs = dirs
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

// local reports whether a probe's target names the bridge's own host.
func local(t string) bool {
	switch strings.ToLower(strings.TrimSpace(t)) {
	case "", "local", "localhost", "bridge":
		return true
	}
	a, err := netip.ParseAddr(t)
	return err == nil && (a == netip.IPv6Loopback() || a == netip.AddrFrom4([4]byte{127, 0, 0, 1}))
}

func (r *runner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	if !local(req.Target) {
		return nil, probe.Errorf(probe.CodeUnsupported, "file_read reads files on the bridge's host (target \"local\"), not on %s", param.Quote(req.Target))
	}
	if p.Path == "" || !filepath.IsAbs(p.Path) {
		return nil, param.Bad("path", "%s: want an absolute path", param.Quote(p.Path))
	}
	if p.Offset < 0 {
		return nil, param.Bad("offset", "%d is negative", p.Offset)
	}
	if p.MaxBytes < 0 || p.MaxBytes > r.cfg.MaxBytes {
		return nil, param.Bad("max_bytes", "%d: want 0-%d", p.MaxBytes, r.cfg.MaxBytes)
	}
	maxBytes := p.MaxBytes
	if maxBytes == 0 {
		maxBytes = min(16<<20, r.cfg.MaxBytes)
	}
	switch p.Encoding {
	case "", "auto", "base64":
	default:
		return nil, param.Bad("encoding", "%s: want auto or base64", param.Quote(p.Encoding))
	}
	path := filepath.Clean(p.Path)
	dir, rel, ok := r.allowed(path)
	if !ok {
		return nil, probe.Errorf(probe.CodeDenied, "%s is outside the directories this bridge may read", param.Quote(path))
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, probe.Errorf(probe.CodeUnreachable, "allowed directory %s: %v", dir, err)
	}
	defer root.Close()
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, openError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, openError(path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, probe.Errorf(probe.CodeUnsupported, "%s is not a regular file (%s)", param.Quote(path), fi.Mode().Type())
	}
	res := &Result{Path: path, Size: fi.Size(), Mode: fi.Mode().String(), ModTime: fi.ModTime().UTC(), Offset: p.Offset}
	if _, err := f.Seek(p.Offset, io.SeekStart); err != nil {
		return nil, probe.Errorf(probe.CodeBadParams, "params.offset: %v", err)
	}
	// text may double once escaped in JSON (capture.Textual), base64 grows by 4/3: a chunk's
	// raw size keeps it within MaxOutput either way
	chunk := max(1024, capture.Limit(r.set.MaxOutput)*2/5)
	if emit == nil {
		maxBytes = min(maxBytes, int64(chunk)) // without a stream the content must fit in the result
	}
	h := sha256.New()
	buf := make([]byte, chunk)
	var carry []byte // a UTF-8 sequence cut by the chunk boundary
	textMode := p.Encoding != "base64"
	off := p.Offset
	for res.Read < maxBytes {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		want := min(int64(chunk-len(carry)), maxBytes-res.Read)
		n, rerr := io.ReadFull(f, buf[:want])
		if n > 0 {
			h.Write(buf[:n])
			res.Read += int64(n)
			data := append(carry, buf[:n]...)
			carry = nil
			c := Chunk{Path: path, Offset: off}
			if textMode {
				last := rerr != nil || res.Read >= maxBytes
				body := data
				if !last {
					body = capture.TrimPartialRune(data)
					carry = append([]byte(nil), data[len(body):]...)
				}
				if capture.Textual(body) {
					c.Encoding, c.Data, c.Bytes = "text", string(body), len(body)
				} else {
					c.Encoding, c.Data, c.Bytes = "base64", base64.StdEncoding.EncodeToString(data), len(data)
					carry = nil
				}
			} else {
				c.Encoding, c.Data, c.Bytes = "base64", base64.StdEncoding.EncodeToString(data), len(data)
			}
			off += int64(c.Bytes)
			res.Chunks++
			if emit == nil {
				res.Content = &c
			} else if err := emit(ctx, c); err != nil {
				return nil, err
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break
			}
			return nil, probe.Errorf(probe.CodeUnreachable, "reading %s: %v", param.Quote(path), rerr)
		}
	}
	if p.Offset+res.Read < res.Size {
		res.Truncated = true
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	return res, nil
}

// allowed finds the allowed directory holding path.
func (r *runner) allowed(path string) (dir, rel string, ok bool) {
	for _, d := range r.cfg.AllowedDirs {
		rel, err := filepath.Rel(d, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || rel == "." {
			continue
		}
		return d, rel, true
	}
	return "", "", false
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return probe.Errorf(probe.CodeBadParams, "params.path: %s does not exist", param.Quote(path))
	case errors.Is(err, fs.ErrPermission):
		return probe.Errorf(probe.CodeDenied, "%s: permission denied", param.Quote(path))
	case strings.Contains(err.Error(), "escapes from parent"), strings.Contains(err.Error(), "path escapes"):
		return probe.Errorf(probe.CodeDenied, "%s leads outside the allowed directory", param.Quote(path))
	}
	return probe.Errorf(probe.CodeUnreachable, "%s: %v", param.Quote(path), err)
}
