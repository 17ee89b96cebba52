package bridge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/nats-io/nkeys"
)

// hubKey pins the curve key the hub seals credentials with. A sealed credential names its
// sender, and a box opens for whoever sealed it: without a pin, anything able to put a probe
// in front of the bridge could make it use a "credential" of its choosing. The key is learned
// from the first approved enrollment reply — over the hub connection whose certificate the
// bridge verified — and kept in <data>/hub-curve.pub; a later reply naming another key is an
// error the operator must resolve, like a changed SSH host key.
type hubKey struct {
	path string
	mu   sync.Mutex
	key  string
}

func loadHubKey(path string) (*hubKey, error) {
	h := &hubKey{path: path}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return h, nil
	case err != nil:
		return nil, fmt.Errorf("hub curve key %s: %w", path, err)
	}
	k := strings.TrimSpace(string(b))
	if !nkeys.IsValidPublicCurveKey(k) {
		return nil, fmt.Errorf("hub curve key %s does not hold a curve public key (X…): delete it to learn the hub's key again at the next enrollment", path)
	}
	h.key = k
	return h, nil
}

// learn pins k on first use and checks it afterwards.
func (h *hubKey) learn(k string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case k == "":
		return nil // nothing offered: credentials stay refused until a key is pinned
	case !nkeys.IsValidPublicCurveKey(k):
		return fmt.Errorf("the hub offered %q as its curve key, which is not one", k)
	case h.key == "":
		if err := os.WriteFile(h.path, []byte(k+"\n"), 0o600); err != nil {
			return fmt.Errorf("pin the hub's curve key: %w", err)
		}
		h.key = k
		return nil
	case h.key != k:
		return fmt.Errorf("the hub's credential sealing key changed from %s to %s: sealed credentials are refused; if the hub was rebuilt with a new data directory, delete %s and restart the bridge", h.key, k, h.path)
	}
	return nil
}

// check accepts credentials sealed by the pinned key only.
func (h *hubKey) check(sender string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.key == "":
		return errors.New("no hub sealing key is pinned yet (the hub did not name one at enrollment): credentials are refused")
	case sender != h.key:
		return fmt.Errorf("credential sealed by %s, not by the hub's pinned key %s: refused", sender, h.key)
	}
	return nil
}
