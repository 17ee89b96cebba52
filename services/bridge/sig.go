package bridge

import "encoding/base64"

func encodeSig(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
