package bridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

func curvePub(t *testing.T) string {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return pub
}

// The hub's sealing key is pinned on first approval, survives a restart, and a credential
// sealed by any other key — or a hub naming another key later — is refused.
func TestHubKeyPinned(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub-curve.pub")
	h, err := loadHubKey(path)
	if err != nil {
		t.Fatal(err)
	}
	hub, other := curvePub(t), curvePub(t)
	if err := h.check(hub); err == nil {
		t.Fatal("a credential was accepted before any key was pinned")
	}
	if err := h.learn(""); err != nil {
		t.Fatal(err)
	}
	if err := h.learn(hub); err != nil {
		t.Fatal(err)
	}
	if err := h.check(hub); err != nil {
		t.Fatalf("the pinned key's credential: %v", err)
	}
	if err := h.check(other); err == nil || !strings.Contains(err.Error(), "not by the hub's pinned key") {
		t.Fatalf("another sender: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("pin file: %v %v", fi, err)
	}
	again, err := loadHubKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.check(hub); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if err := again.learn(other); err == nil || !strings.Contains(err.Error(), "delete "+path) {
		t.Fatalf("a changed hub key: %v", err)
	}
	if err := again.check(hub); err != nil {
		t.Fatalf("the pin holds after a refused change: %v", err)
	}
	if err := again.learn("not-a-key"); err == nil {
		t.Fatal("a malformed key was pinned")
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadHubKey(path); err == nil {
		t.Fatal("a garbage pin file loaded")
	}
}
