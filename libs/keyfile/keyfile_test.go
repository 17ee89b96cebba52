package keyfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/keyfile"
)

func TestModes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode    fs.FileMode
		refused bool
	}{
		{0o600, false}, {0o400, false}, {0o700, false},
		{0o640, true}, {0o604, true}, {0o644, true}, {0o660, true}, {0o666, true}, {0o610, true},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k.key")
			if err := os.WriteFile(path, []byte("s3cret"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			b, err := keyfile.Read(path)
			var me *keyfile.ModeError
			if tc.refused {
				if !errors.As(err, &me) || !strings.Contains(err.Error(), "chmod 600 "+path) || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("mode %v: want a refusal naming the file and the chmod, got %v", tc.mode, err)
				}
				return
			}
			if err != nil || string(b) != "s3cret" {
				t.Fatalf("mode %v: %q %v", tc.mode, b, err)
			}
		})
	}
}

func TestLoadOrCreate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "k.key")
	if _, err := keyfile.Read(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	calls := 0
	mk := func() ([]byte, error) { calls++; return []byte("first"), nil }
	b, err := keyfile.LoadOrCreate(path, mk)
	if err != nil || string(b) != "first" {
		t.Fatalf("create: %q %v", b, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("created with mode %v, want 0600", st.Mode().Perm())
	}
	b, err = keyfile.LoadOrCreate(path, func() ([]byte, error) { return []byte("second"), nil })
	if err != nil || string(b) != "first" || calls != 1 {
		t.Fatalf("second load replaced the key: %q %v", b, err)
	}
	if err := keyfile.Create(path, []byte("x")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over an existing key: %v", err)
	}
	_ = os.Chmod(path, 0o644)
	if _, err := keyfile.LoadOrCreate(path, mk); err == nil || calls != 1 {
		t.Fatalf("world-readable key loaded or replaced: %v (calls %d)", err, calls)
	}
}

// Create makes the file whole (0600) or not at all, never replaces one, and leaves no
// temporary file behind either way.
func TestCreateIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.creds")
	if err := keyfile.Create(path, []byte("secret: 1\n")); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi, err)
	}
	if err := keyfile.Create(path, []byte("secret: 2\n")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second create: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "secret: 1\n" {
		t.Fatalf("overwritten: %q", b)
	}
	// A directory the write cannot happen in: nothing appears.
	if err := keyfile.Create(filepath.Join(dir, "missing", "x"), []byte("s")); err == nil {
		t.Fatal("created in a missing directory")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left behind: %v", names)
	}
}
