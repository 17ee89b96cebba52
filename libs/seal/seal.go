// Package seal carries target credentials from the hub to bridges: each credential is sealed
// (curve25519 box, nkeys xkeys) to the curve key of every approved bridge of the site, so only
// those bridges can open it, and it is never in clear on the bus, in a stream or in a log.
package seal

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nkeys"

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
		box, err := hub.Seal(plain, r)
		if err != nil {
			return envelope.SealedCredential{}, fmt.Errorf("seal %s for %s: %w", s.Name, r, err)
		}
		out.Boxes[r] = base64.StdEncoding.EncodeToString(box)
	}
	return out, nil
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
