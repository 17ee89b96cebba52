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
// already there: a secret is never overwritten by accident.
func Create(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
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
	return f.Close()
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
