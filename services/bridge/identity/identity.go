// Package identity keeps a bridge's keys: an NKey (Ed25519) it signs in with, and a curve
// (xkey) pair credentials are sealed to. Both are created on first start in the data dir with
// mode 0600 and never leave it.
package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nkeys"
)

// Identity is the bridge's key pairs.
type Identity struct {
	NKey nkeys.KeyPair // user key: the bridge's identity at the hub
	XKey nkeys.KeyPair // curve key: credentials are sealed to it
}

// Public returns the two public keys.
func (id Identity) Public() (nkey, xkey string) {
	nkey, _ = id.NKey.PublicKey()
	xkey, _ = id.XKey.PublicKey()
	return nkey, xkey
}

// Sign signs with the NKey.
func (id Identity) Sign(b []byte) ([]byte, error) { return id.NKey.Sign(b) }

// LoadOrCreate reads the key pairs in dir, creating them the first time.
func LoadOrCreate(dir string) (Identity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Identity{}, fmt.Errorf("data dir %s: %w", dir, err)
	}
	nk, err := loadOrCreate(filepath.Join(dir, "identity.nk"), nkeys.CreateUser)
	if err != nil {
		return Identity{}, err
	}
	xk, err := loadOrCreate(filepath.Join(dir, "identity.xk"), nkeys.CreateCurveKeys)
	if err != nil {
		return Identity{}, err
	}
	return Identity{NKey: nk, XKey: xk}, nil
}

func loadOrCreate(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", path, st.Mode().Perm())
		}
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("%s: not a key seed: %w", path, err)
		}
		return kp, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	kp, err := create()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	// O_EXCL: two bridges started on one data dir must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.Write(append(seed, '\n')); err != nil {
		return nil, err
	}
	return kp, f.Sync()
}
