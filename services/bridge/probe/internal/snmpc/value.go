package snmpc

import (
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"net"
	"strings"
	"unicode/utf8"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/probes/snmp"
)

// Value is one varbind, decoded to JSON-friendly types (the contract's wire type).
type Value = snmp.Value

// MaxOctets bounds an octet string in a result (a hostile agent may send 64 KiB).
const MaxOctets = 16 << 10

// physAddressColumns are OIDs whose values are MAC addresses (PhysAddress or MacAddress
// textual conventions) when they are 6 bytes long.
var physAddressColumns = []string{
	".1.3.6.1.2.1.2.2.1.6.",        // ifPhysAddress
	".1.3.6.1.2.1.4.22.1.2.",       // ipNetToMediaPhysAddress
	".1.3.6.1.2.1.4.35.1.4.",       // ipNetToPhysicalPhysAddress
	".1.3.6.1.2.1.17.4.3.1.1.",     // dot1dTpFdbAddress
	".1.3.6.1.2.1.17.7.1.2.2.1.1.", // dot1qTpFdbAddress
	".1.3.6.1.2.1.17.1.1.",         // dot1dBaseBridgeAddress
	".1.0.8802.1.1.2.1.3.2.",       // lldpLocChassisId
	".1.0.8802.1.1.2.1.4.1.1.5.",   // lldpRemChassisId
}

func isPhysAddress(oid string) bool {
	o := oid
	if !strings.HasPrefix(o, ".") {
		o = "." + o
	}
	for _, p := range physAddressColumns {
		if strings.HasPrefix(o+".", p) {
			return true
		}
	}
	return false
}

// Decode turns a varbind into a Value.
func Decode(pdu gosnmp.SnmpPDU) Value {
	v := Value{OID: normOID(pdu.Name)}
	switch pdu.Type {
	case gosnmp.OctetString:
		v.Type = "octet_string"
		b, _ := pdu.Value.([]byte)
		if s, ok := pdu.Value.(string); ok {
			b = []byte(s)
		}
		v.Value, v.Encoding = Octets(b, isPhysAddress(v.OID))
	case gosnmp.Integer:
		v.Type, v.Value = "integer", toInt(pdu.Value)
	case gosnmp.Counter32:
		v.Type, v.Value = "counter32", toUint(pdu.Value)
	case gosnmp.Counter64:
		v.Type, v.Value = "counter64", toUint(pdu.Value)
	case gosnmp.Gauge32:
		v.Type, v.Value = "gauge32", toUint(pdu.Value)
	case gosnmp.Uinteger32:
		v.Type, v.Value = "uinteger32", toUint(pdu.Value)
	case gosnmp.TimeTicks:
		t := toUint(pdu.Value)
		v.Type, v.Value, v.Text = "timeticks", t, Ticks(t)
	case gosnmp.IPAddress:
		v.Type = "ip_address"
		switch x := pdu.Value.(type) {
		case string:
			v.Value = x
		case []byte:
			if len(x) == 4 || len(x) == 16 {
				v.Value = net.IP(x).String()
			} else {
				v.Value, v.Encoding = hex.EncodeToString(x), "hex"
			}
		default:
			v.Value = fmt.Sprint(x)
		}
	case gosnmp.ObjectIdentifier:
		v.Type = "oid"
		if s, ok := pdu.Value.(string); ok {
			v.Value = normOID(s)
		} else {
			v.Value = fmt.Sprint(pdu.Value)
		}
	case gosnmp.Null:
		v.Type = "null"
	case gosnmp.NoSuchObject:
		v.Type = "no_such_object"
	case gosnmp.NoSuchInstance:
		v.Type = "no_such_instance"
	case gosnmp.EndOfMibView:
		v.Type = "end_of_mib_view"
	case gosnmp.OpaqueFloat:
		v.Type, v.Value = "float", finite(toFloat(pdu.Value))
	case gosnmp.OpaqueDouble:
		v.Type, v.Value = "double", finite(toFloat(pdu.Value))
	case gosnmp.Opaque, gosnmp.BitString, gosnmp.NsapAddress:
		v.Type = map[gosnmp.Asn1BER]string{gosnmp.Opaque: "opaque", gosnmp.BitString: "bit_string", gosnmp.NsapAddress: "nsap_address"}[pdu.Type]
		b, _ := pdu.Value.([]byte)
		if len(b) > MaxOctets {
			b = b[:MaxOctets]
		}
		v.Value, v.Encoding = hex.EncodeToString(b), "hex"
	default:
		v.Type = fmt.Sprintf("type_0x%02x", byte(pdu.Type))
		if b, ok := pdu.Value.([]byte); ok {
			if len(b) > MaxOctets {
				b = b[:MaxOctets]
			}
			v.Value, v.Encoding = hex.EncodeToString(b), "hex"
		} else if pdu.Value != nil {
			v.Value = fmt.Sprint(pdu.Value)
		}
	}
	return v
}

// Octets renders an octet string: text when printable, a MAC when it is one (6 bytes where
// a MAC is expected), hex otherwise.
func Octets(b []byte, mac bool) (string, string) {
	if mac && len(b) == 6 {
		return MAC(b), "mac"
	}
	if len(b) > MaxOctets {
		b = b[:MaxOctets]
	}
	t := b
	for len(t) > 0 && t[len(t)-1] == 0 { // C strings
		t = t[:len(t)-1]
	}
	if Printable(t) {
		return string(t), ""
	}
	return hex.EncodeToString(b), "hex"
}

// Printable reports whether b is UTF-8 text without control characters (tabs and line
// breaks allowed).
func Printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return true
}

// MAC formats 6 bytes as aa:bb:cc:dd:ee:ff.
func MAC(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(parts, ":")
}

// Ticks renders hundredths of seconds as "12d 03:04:05.67".
func Ticks(t uint64) string {
	cs := t % 100
	s := t / 100
	return fmt.Sprintf("%dd %02d:%02d:%02d.%02d", s/86400, s/3600%24, s/60%60, s%60, cs)
}

func normOID(s string) string {
	if s != "" && !strings.HasPrefix(s, ".") {
		return "." + s
	}
	return s
}

func toInt(v any) any {
	switch x := v.(type) {
	case int:
		return int64(x)
	case int64:
		return x
	case int32:
		return int64(x)
	case uint:
		return uint64(x)
	case uint32:
		return int64(x)
	case uint64:
		return x
	case *big.Int:
		if x != nil && x.IsInt64() {
			return x.Int64()
		}
		if x != nil {
			return x.String()
		}
	}
	if v == nil {
		return nil
	}
	return fmt.Sprint(v)
}

func toUint(v any) uint64 {
	switch x := v.(type) {
	case uint:
		return uint64(x)
	case uint32:
		return uint64(x)
	case uint64:
		return x
	case int:
		if x >= 0 {
			return uint64(x)
		}
	case int64:
		if x >= 0 {
			return uint64(x)
		}
	case *big.Int:
		if x != nil && x.IsUint64() {
			return x.Uint64()
		}
	}
	return 0
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	}
	return 0
}

// finite keeps NaN and infinities out of JSON (which cannot carry them).
func finite(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Sprint(f)
	}
	return f
}
