// Package release signs and checks bridge builds. The hub keeps an ed25519 release key in its
// data dir (0600, made on first use); a bridge pins the public half at its first approved
// enrollment, like the hub's curve key, and runs only builds whose signature verifies with
// it. What is signed is the build's identity (os, arch, version) together with the SHA-256
// of its bytes, so a signed build cannot be passed off as another version or platform.
package release

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/outpost-dev/outpost/libs/keyfile"
)

// KeyFile is the release key's file name in the hub's data dir.
const KeyFile = "release.key"

// Bucket is the hub's JetStream object store of bridge builds.
const Bucket = "bridge_builds"

// Build names one bridge build.
type Build struct {
	OS, Arch, Version string
}

var (
	osArchRe  = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}$`)
)

// Validate reports every problem of the build's name: the name becomes an object name, so
// it is a closed alphabet (no path, no wildcard, no other bucket's object).
func (b Build) Validate() error {
	var errs []error
	if !osArchRe.MatchString(b.OS) {
		errs = append(errs, fmt.Errorf("os %q: want a GOOS such as linux or windows", b.OS))
	}
	if !osArchRe.MatchString(b.Arch) {
		errs = append(errs, fmt.Errorf("arch %q: want a GOARCH such as amd64 or arm64", b.Arch))
	}
	if !versionRe.MatchString(b.Version) {
		errs = append(errs, fmt.Errorf("version %q: want letters, digits and . + ~ _ - (at most 64), such as v1.2.3", b.Version))
	}
	return errors.Join(errs...)
}

// ValidVersion reports whether v can name a build (and so be pinned).
func ValidVersion(v string) bool { return versionRe.MatchString(v) }

// Object is the build's object name in Bucket.
func (b Build) Object() string { return b.OS + "-" + b.Arch + "-" + b.Version }

func (b Build) String() string { return b.Version + " (" + b.OS + "/" + b.Arch + ")" }

// SigningBytes are what the release key signs: the build's identity and the digest of its
// bytes.
func SigningBytes(b Build, sha256Hex string) []byte {
	return []byte("outpost-bridge-build\n" + b.OS + "\n" + b.Arch + "\n" + b.Version + "\n" + strings.ToLower(sha256Hex))
}

// Metadata headers of a build object: its digest and signature travel with it.
const (
	HeaderSHA256    = "Outpost-Sha256"
	HeaderSignature = "Outpost-Signature"
)

// Digest is the lowercase hex SHA-256 of data.
func Digest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Key is the hub's release key.
type Key struct{ priv ed25519.PrivateKey }

// LoadOrCreateKey reads the release key at path, or makes one (0600) when there is none.
// A key others may read is refused (keyfile.ModeError).
func LoadOrCreateKey(path string) (*Key, error) {
	raw, err := keyfile.LoadOrCreate(path, func() ([]byte, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return []byte(base64.StdEncoding.EncodeToString(priv.Seed()) + "\n"), nil
	})
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("release key %s: not a base64 ed25519 seed; move it away to make a new one (bridges pinned the old public key and will refuse builds signed by a new one until their release.pub is deleted)", path)
	}
	return &Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// NewKey makes a fresh release key (outpost hub-creds: one key every replica of a hub shares).
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv}, nil
}

// KeyFromSeed is the key of a base64 ed25519 seed (Seed's form).
func KeyFromSeed(s string) (*Key, error) {
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("not a base64 ed25519 seed")
	}
	return &Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// String names the key by its public half: a Key printed by mistake (%v, %s, %x, a log
// attribute, an error) never shows the private key. Value receivers, so that a Key value
// and a *Key both have it.
func (k Key) String() string {
	if k.priv == nil {
		return "release key (none)"
	}
	return "release key " + k.Public()
}

// GoString is String for %#v, which would otherwise print the private key's bytes.
func (k Key) GoString() string { return k.String() }

// LogValue logs the key as its public half (slog).
func (k Key) LogValue() slog.Value {
	if k.priv == nil {
		return slog.StringValue("(none)")
	}
	return slog.GroupValue(slog.String("public", k.Public()))
}

// Seed is the key's private seed, base64: what a credentials file keeps. Never log it.
func (k *Key) Seed() string { return base64.StdEncoding.EncodeToString(k.priv.Seed()) }

// Public is the key's public half as bridges pin it (base64).
func (k Key) Public() string {
	return base64.StdEncoding.EncodeToString(k.priv.Public().(ed25519.PublicKey))
}

// Sign signs the build whose bytes have the given digest; the signature is base64.
func (k *Key) Sign(b Build, sha256Hex string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(k.priv, SigningBytes(b, sha256Hex)))
}

// ErrBadSignature is a build whose signature does not verify with the pinned key.
var ErrBadSignature = errors.New("bad signature")

// Verify checks that data is the build b signed (sig, base64) by the public key pub
// (base64): its digest must match and the signature verify.
func Verify(pub string, b Build, data []byte, sig string) error {
	k, err := base64.StdEncoding.DecodeString(pub)
	if err != nil || len(k) != ed25519.PublicKeySize {
		return fmt.Errorf("release public key %q: not a base64 ed25519 public key", pub)
	}
	s, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(s) != ed25519.SignatureSize {
		return fmt.Errorf("build %s: %w: the signature is not a base64 ed25519 signature", b, ErrBadSignature)
	}
	if !ed25519.Verify(ed25519.PublicKey(k), SigningBytes(b, Digest(data)), s) {
		return fmt.Errorf("build %s: %w: it does not verify with the release key pinned at enrollment (altered, or signed by another hub's key)", b, ErrBadSignature)
	}
	return nil
}

// ValidPublic reports whether s is a release public key.
func ValidPublic(s string) bool {
	k, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(k) == ed25519.PublicKeySize
}
