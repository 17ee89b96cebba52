// Package seal carries target credentials from the hub to bridges: each credential is sealed
// (curve25519 box, nkeys xkeys) to the curve key of every approved bridge of the site, so only
// those bridges can open it, and it is never in clear on the bus, in a stream or in a log.
package seal

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// Secret is what a sealed credential holds.
type Secret struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Username string            `json:"username,omitempty"`
	Secret   string            `json:"secret"`
	Fields   map[string]string `json:"fields,omitempty"`
	// AllowInsecure: an admin allowed this credential over plaintext or unverified TLS.
	AllowInsecure bool `json:"allow_insecure,omitempty"`
	// Probe binds the sealed copy to one probe: a copy lifted from one probe cannot be
	// replayed into another (xkey boxes have no replay protection of their own).
	Probe string    `json:"probe"`
	Time  time.Time `json:"time"`
}

// Seal seals s for every recipient curve key, from the hub's curve key.
func Seal(hub nkeys.KeyPair, s Secret, recipients []string) (envelope.SealedCredential, error) {
	plain, err := json.Marshal(s)
	if err != nil {
		return envelope.SealedCredential{}, err
	}
	sender, err := hub.PublicKey()
	if err != nil {
		return envelope.SealedCredential{}, err
	}
	out := envelope.SealedCredential{Name: s.Name, Type: s.Type, Sender: sender, Boxes: map[string]string{}}
	for _, r := range recipients {
		box, err := sealTo(hub, sender, plain, r)
		if err != nil {
			return envelope.SealedCredential{}, fmt.Errorf("seal %s for %s: %w", s.Name, r, err)
		}
		out.Boxes[r] = base64.StdEncoding.EncodeToString(box)
	}
	return out, nil
}

// sealTo is hub.Seal(plain, recipient) — the same xkeys box (version, nonce, box), opened by
// nkeys' Open — with the key of the hub and recipient pair computed once (box.Precompute)
// instead of for every box. That X25519 was nearly all of a seal: a discovery run seals
// each sweep probe's credentials to every bridge of the site, thousands of probes before
// the first scan chunk goes out (1 ms a credential for three bridges on the loaded bench
// machine: the hub took 6.7 s to send a run's first scan chunk, 1.1 s with this; see
// docs/benchmarks.md, shared scan). A key that nkeys cannot give raw falls back to its own
// Seal.
func sealTo(hub nkeys.KeyPair, sender string, plain []byte, recipient string) ([]byte, error) {
	key, err := pairKey(hub, sender, recipient)
	if err != nil {
		return hub.Seal(plain, recipient)
	}
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(nkeys.XKeyVersionV1)+len(nonce)+len(plain)+box.Overhead)
	out = append(append(out, nkeys.XKeyVersionV1...), nonce[:]...)
	return box.SealAfterPrecomputation(out, plain, &nonce, key), nil
}

// pairKeys holds the precomputed box keys by sender and recipient: a hub has one curve key
// and a site a handful of bridges, so it stays small; it is emptied if it ever reaches
// maxPairKeys (keys rotated many times in a long-lived hub).
var pairKeys = struct {
	sync.Mutex
	m map[[2]string]*[32]byte
}{m: map[[2]string]*[32]byte{}}

const maxPairKeys = 4096

func pairKey(hub nkeys.KeyPair, sender, recipient string) (*[32]byte, error) {
	id := [2]string{sender, recipient}
	pairKeys.Lock()
	key := pairKeys.m[id]
	pairKeys.Unlock()
	if key != nil {
		return key, nil
	}
	rpub, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(recipient))
	if err != nil || len(rpub) != 32 {
		return nil, fmt.Errorf("recipient %s: %w", recipient, nkeys.ErrInvalidRecipient)
	}
	encoded, err := hub.PrivateKey()
	if err != nil {
		return nil, err
	}
	priv, err := nkeys.Decode(nkeys.PrefixBytePrivate, encoded)
	clear(encoded)
	if err != nil || len(priv) != 32 {
		return nil, errors.New("hub curve key: no raw private key")
	}
	key = new([32]byte)
	box.Precompute(key, (*[32]byte)(rpub), (*[32]byte)(priv))
	clear(priv)
	pairKeys.Lock()
	if len(pairKeys.m) >= maxPairKeys {
		clear(pairKeys.m)
	}
	pairKeys.m[id] = key
	pairKeys.Unlock()
	return key, nil
}

// ErrNotForUs: the credential was not sealed for this bridge's key (it was approved after the
// probe was sent, or the hub does not know its key).
var ErrNotForUs = errors.New("credential not sealed for this bridge")

// Open opens the copy sealed for me, checking it belongs to probe.
func Open(me nkeys.KeyPair, c envelope.SealedCredential, probe string) (Secret, error) {
	pub, err := me.PublicKey()
	if err != nil {
		return Secret{}, err
	}
	b64, ok := c.Boxes[pub]
	if !ok {
		return Secret{}, ErrNotForUs
	}
	box, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Secret{}, fmt.Errorf("credential %s: %w", c.Name, err)
	}
	plain, err := me.Open(box, c.Sender)
	if err != nil {
		return Secret{}, fmt.Errorf("credential %s: cannot open: %w", c.Name, err)
	}
	var s Secret
	if err := json.Unmarshal(plain, &s); err != nil {
		return Secret{}, fmt.Errorf("credential %s: %w", c.Name, err)
	}
	if s.Probe != probe {
		return Secret{}, fmt.Errorf("credential %s was sealed for probe %s, not %s", c.Name, s.Probe, probe)
	}
	return s, nil
}
