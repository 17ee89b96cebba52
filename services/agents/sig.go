package agents

import (
	"encoding/base64"
	"errors"
)

// decodeSig reads a signature as NATS clients send it (raw URL base64), tolerating padding.
func decodeSig(s string) ([]byte, error) {
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	if b, err := base64.URLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return nil, errors.New("signature is not base64")
}
