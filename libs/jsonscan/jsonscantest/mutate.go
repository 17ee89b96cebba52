// Package jsonscantest corrupts JSON for the differential tests of decoders built on
// jsonscan: a decoder that gives up must give up on every corrupted copy the strict decoder
// rejects, and agree with it on every copy it accepts.
package jsonscantest

import "math/rand/v2"

// alphabet is the bytes a mutation inserts: JSON's structure, numbers, literals, escapes and
// bytes no JSON text may hold raw.
var alphabet = []byte(`{}[]",:.-+eE0123456789 \ntrufalsn` + "\x00\xff\\u")

// Mutate returns a copy of data with one to three bytes flipped, dropped or inserted.
func Mutate(rng *rand.Rand, data []byte) []byte {
	b := append([]byte(nil), data...)
	for range 1 + rng.IntN(3) {
		if len(b) == 0 {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
			continue
		}
		i := rng.IntN(len(b))
		switch rng.IntN(3) {
		case 0:
			b[i] = alphabet[rng.IntN(len(alphabet))]
		case 1:
			b = append(b[:i], b[i+1:]...)
		default:
			b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
		}
	}
	return b
}
