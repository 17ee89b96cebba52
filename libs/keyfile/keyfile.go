// Package keyfile keeps the small secrets a process stores in its data dir (signing keys,
// passwords, tokens): it creates them readable by their owner only, and refuses to load one
// that group or others may read, because a secret that leaked through its mode is no longer
// a secret and the owner should hear about it rather than keep running on it.
package keyfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ModeError is a secret file that group or others may read.
type ModeError struct {
	Path string
	Mode fs.FileMode
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("%s is readable by group or others (mode %04o) and holds a secret: run `chmod 600 %s`, then start again",
		e.Path, e.Mode.Perm(), e.Path)
}

// Read returns the contents of the secret file at path. A missing file is an error wrapping
// fs.ErrNotExist; a file with any group or other permission bit is a *ModeError.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, &ModeError{Path: path, Mode: st.Mode()}
	}
	return io.ReadAll(f)
}

// Create writes a new secret file with mode 0600. It fails with fs.ErrExist if the file is
// already there: a secret is never overwritten by accident. The file appears whole or not
// at all: the data goes to a 0600 temporary file in the same directory, synced, then
// hard-linked to path (which, unlike rename, refuses to replace an existing file), so a
// failed write (disk full, a crash) never leaves a partial secret file behind.
func Create(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // the link (or nothing) stays
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) && errors.Is(le.Err, fs.ErrExist) {
			return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
		}
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the new name survives a crash
		_ = d.Close()
	}
	return nil
}

// LoadOrCreate reads the secret file at path, or creates it with what create returns when
// it does not exist yet. When two processes race to create it, both get the winner's.
func LoadOrCreate(path string, create func() ([]byte, error)) ([]byte, error) {
	b, err := Read(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	data, err := create()
	if err != nil {
		return nil, err
	}
	if err := Create(path, data); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Read(path)
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return data, nil
}
