package jsonscan

import "encoding/json"

// AppendString appends s quoted exactly as json.Marshal writes it (HTML characters escaped,
// U+FFFD for invalid bytes, \u2028 and \u2029 escaped): as it is when it is printable ASCII
// that encoding/json leaves unescaped, else through json.Marshal itself. Byte equality
// matters: the CMDB recognises a payload sent again by the digest of its bytes.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			j, _ := json.Marshal(s) // a string always encodes
			return append(b, j...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
