package release

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-dev/outpost/libs/keyfile"
)

func TestSignVerify(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode())
	}
	again, err := LoadOrCreateKey(filepath.Join(dir, KeyFile))
	if err != nil || again.Public() != k.Public() {
		t.Fatalf("reload: %v (%s vs %s)", err, again.Public(), k.Public())
	}
	other, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), KeyFile))
	data := []byte("a build")
	b := Build{"linux", "amd64", "v1.2.3"}
	sig := k.Sign(b, Digest(data))
	cases := []struct {
		name string
		pub  string
		b    Build
		data []byte
		sig  string
		bad  bool
	}{
		{"good", k.Public(), b, data, sig, false},
		{"altered bytes", k.Public(), b, []byte("a build!"), sig, true},
		{"another version", k.Public(), Build{"linux", "amd64", "v1.2.4"}, data, sig, true},
		{"another arch", k.Public(), Build{"linux", "arm64", "v1.2.3"}, data, sig, true},
		{"another hub's key", other.Public(), b, data, sig, true},
		{"signed by another key", k.Public(), b, data, other.Sign(b, Digest(data)), true},
		{"garbage signature", k.Public(), b, data, "not base64!", true},
		{"flipped signature", k.Public(), b, data, flip(sig), true},
	}
	for _, c := range cases {
		err := Verify(c.pub, c.b, c.data, c.sig)
		if c.bad != (err != nil) {
			t.Errorf("%s: %v", c.name, err)
		}
		if c.bad && !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v is not ErrBadSignature", c.name, err)
		}
	}
	if err := Verify("nope", b, data, sig); err == nil || !strings.Contains(err.Error(), "public key") {
		t.Errorf("bad public key: %v", err)
	}
	// a key others may read is refused
	p := filepath.Join(dir, KeyFile)
	_ = os.Chmod(p, 0o644)
	var me *keyfile.ModeError
	if _, err := LoadOrCreateKey(p); !errors.As(err, &me) {
		t.Errorf("0644 key: %v", err)
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

func TestBuildValidate(t *testing.T) {
	cases := []struct {
		b    Build
		want []string
	}{
		{Build{"linux", "amd64", "v1.2.3"}, nil},
		{Build{"windows", "amd64", "0.0.0~cf7c0c5"}, nil},
		{Build{"", "x/y", "../../import_uploads"}, []string{"os", "arch", "version"}},
		{Build{"linux", "amd64", "v1 2"}, []string{"version"}},
		{Build{"linux", "amd64", "*"}, []string{"version"}},
	}
	for _, c := range cases {
		err := c.b.Validate()
		if (err == nil) != (len(c.want) == 0) {
			t.Errorf("%+v: %v", c.b, err)
		}
		for _, w := range c.want {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v lacks %s", c.b, err, w)
			}
		}
	}
}

// TestKeySeed: a key written as its seed (a hub's credentials file) reads back as the same
// key, and what it signs verifies with the original's public half.
func TestKeySeed(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	back, err := KeyFromSeed(k.Seed() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if back.Public() != k.Public() {
		t.Fatalf("public key after a round trip through the seed: %s, want %s", back.Public(), k.Public())
	}
	data := []byte("a build")
	b := Build{"linux", "amd64", "v1.0.0"}
	if err := Verify(k.Public(), b, data, back.Sign(b, Digest(data))); err != nil {
		t.Errorf("signed with the key read from its seed: %v", err)
	}
	for _, bad := range []string{"", "not base64!", "AAAA"} {
		if _, err := KeyFromSeed(bad); err == nil {
			t.Errorf("seed %q accepted", bad)
		}
	}
}

// A release key printed by mistake — %v, %+v, %#v, %s, a log attribute — shows its public
// half only, never the private key or its seed.
func TestKeyNeverPrintsItsPrivateHalf(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("release key", "key", k)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("release key", "key", k)
	outs := []string{fmt.Sprintf("%v", k), fmt.Sprintf("%+v", k), fmt.Sprintf("%#v", k), fmt.Sprintf("%s", k), fmt.Sprint(*k), logged.String()}
	seed := k.Seed()
	raw, _ := base64.StdEncoding.DecodeString(seed)
	for i, out := range outs {
		if strings.Contains(out, seed) || strings.Contains(out, strings.Trim(fmt.Sprint(raw), "[]")) || strings.Contains(out, hex.EncodeToString(raw)) {
			t.Errorf("form %d shows the private key: %s", i, out)
		}
		if !strings.Contains(out, k.Public()) {
			t.Errorf("form %d does not name the key by its public half: %s", i, out)
		}
	}
}
