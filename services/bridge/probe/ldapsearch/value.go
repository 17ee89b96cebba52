package ldapsearch

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxValue bounds one attribute value in a result.
const MaxValue = 16 << 10

// binaryAttrs are attributes whose values are bytes, whatever they look like.
var binaryAttrs = map[string]bool{
	"jpegphoto": true, "thumbnailphoto": true, "usercertificate": true, "usercertificate;binary": true,
	"cacertificate": true, "cacertificate;binary": true, "certificaterevocationlist": true,
	"usersmimecertificate": true, "msexchmailboxsecuritydescriptor": true, "ntsecuritydescriptor": true,
	"logonhours": true, "userpassword": true, "unicodepwd": true, "msds-generationid": true,
}

// Value renders one attribute value: text when it is printable UTF-8, objectGUID as a
// GUID, objectSid as S-1-5-..., anything else as base64 (binary true). The result is at
// most MaxValue bytes (truncated true when cut).
func Value(attr string, raw []byte) (s string, binary, truncated bool) {
	a := strings.ToLower(attr)
	switch {
	case (a == "objectguid" || a == "msexchmailboxguid") && len(raw) == 16:
		return GUID(raw), false, false
	case (a == "objectsid" || a == "securityidentifier" || a == "sidhistory") && len(raw) >= 8:
		if sid, ok := SID(raw); ok {
			return sid, false, false
		}
	}
	if !binaryAttrs[a] && printable(raw) {
		if len(raw) > MaxValue {
			cut := raw[:MaxValue]
			for len(cut) > 0 && !utf8.Valid(cut) {
				cut = cut[:len(cut)-1]
			}
			return string(cut), false, true
		}
		return string(raw), false, false
	}
	if len(raw) > MaxValue {
		return base64.StdEncoding.EncodeToString(raw[:MaxValue]), true, true
	}
	return base64.StdEncoding.EncodeToString(raw), true, false
}

func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0x7f {
			return false
		}
	}
	return true
}

// GUID formats an Active Directory objectGUID (mixed-endian) as
// 3f2504e0-4f89-11d3-9a0c-0305e82c3301.
func GUID(b []byte) string {
	if len(b) != 16 {
		return ""
	}
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(b[0:4]), binary.LittleEndian.Uint16(b[4:6]), binary.LittleEndian.Uint16(b[6:8]), b[8:10], b[10:16])
}

// SID formats a binary security identifier as S-1-5-21-...; false when it is malformed.
func SID(b []byte) (string, bool) {
	if len(b) < 8 || b[0] != 1 {
		return "", false
	}
	n := int(b[1])
	if n > 15 || len(b) != 8+4*n {
		return "", false
	}
	var auth uint64
	for _, c := range b[2:8] {
		auth = auth<<8 | uint64(c)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "S-%d-%d", b[0], auth)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "-%d", binary.LittleEndian.Uint32(b[8+4*i:]))
	}
	return sb.String(), true
}
