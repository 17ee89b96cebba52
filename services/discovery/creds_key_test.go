package discovery

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The credential key is created 0600 and refused once group or others may read it: the
// service does not start on a key that may have leaked.
func TestCredentialKeyMode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := loadKey(dir)
	if err != nil || len(key) != 32 {
		t.Fatalf("create: %d bytes, %v", len(key), err)
	}
	path := filepath.Join(dir, "credentials.key")
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("created with mode %v", st.Mode().Perm())
	}
	if again, err := loadKey(dir); err != nil || !bytes.Equal(again, key) {
		t.Fatalf("reload: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		_ = os.Chmod(path, mode)
		if _, err := loadKey(dir); err == nil || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Fatalf("mode %v: want a refusal with the chmod to run, got %v", mode, err)
		}
	}
}
