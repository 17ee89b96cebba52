package snmpc

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/gosnmp/gosnmp"
)

func TestDecode(t *testing.T) {
	cases := []struct {
		pdu  gosnmp.SnmpPDU
		want Value
	}{
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.1.1.0", Type: gosnmp.OctetString, Value: []byte("Cisco IOS Software\r\n")},
			Value{OID: ".1.3.6.1.2.1.1.1.0", Type: "octet_string", Value: "Cisco IOS Software\r\n"}},
		{gosnmp.SnmpPDU{Name: "1.3.6.1.2.1.2.2.1.6.3", Type: gosnmp.OctetString, Value: []byte{0, 0x1b, 0x54, 0xaa, 0xbb, 0x0c}},
			Value{OID: ".1.3.6.1.2.1.2.2.1.6.3", Type: "octet_string", Value: "00:1b:54:aa:bb:0c", Encoding: "mac"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.4.1.9.1", Type: gosnmp.OctetString, Value: []byte{0, 0x1b, 0x54, 0xaa, 0xbb, 0x0c}},
			Value{OID: ".1.3.6.1.4.1.9.1", Type: "octet_string", Value: "001b54aabb0c", Encoding: "hex"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.1.5.0", Type: gosnmp.OctetString, Value: []byte("sw1\x00")},
			Value{OID: ".1.3.6.1.2.1.1.5.0", Type: "octet_string", Value: "sw1"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(123456789)},
			Value{OID: ".1.3.6.1.2.1.1.3.0", Type: "timeticks", Value: uint64(123456789), Text: "14d 06:56:07.89"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.1.2.0", Type: gosnmp.ObjectIdentifier, Value: "1.3.6.1.4.1.9.1.1745"},
			Value{OID: ".1.3.6.1.2.1.1.2.0", Type: "oid", Value: ".1.3.6.1.4.1.9.1.1745"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.4.20.1.1.10.0.0.1", Type: gosnmp.IPAddress, Value: "10.0.0.1"},
			Value{OID: ".1.3.6.1.2.1.4.20.1.1.10.0.0.1", Type: "ip_address", Value: "10.0.0.1"}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.31.1.1.1.6.1", Type: gosnmp.Counter64, Value: uint64(math.MaxUint64)},
			Value{OID: ".1.3.6.1.2.1.31.1.1.1.6.1", Type: "counter64", Value: uint64(math.MaxUint64)}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.2.2.1.5.1", Type: gosnmp.Gauge32, Value: uint(1000000000)},
			Value{OID: ".1.3.6.1.2.1.2.2.1.5.1", Type: "gauge32", Value: uint64(1000000000)}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.2.2.1.8.1", Type: gosnmp.Integer, Value: 2},
			Value{OID: ".1.3.6.1.2.1.2.2.1.8.1", Type: "integer", Value: int64(2)}},
		{gosnmp.SnmpPDU{Name: ".1.3.6.1.2.1.1.9.0", Type: gosnmp.NoSuchObject},
			Value{OID: ".1.3.6.1.2.1.1.9.0", Type: "no_such_object"}},
	}
	for _, c := range cases {
		got := Decode(c.pdu)
		if gj, _ := json.Marshal(got); string(gj) != string(must(json.Marshal(c.want))) {
			t.Errorf("Decode(%+v)\n got %s\nwant %s", c.pdu, gj, must(json.Marshal(c.want)))
		}
	}
}

func must(b []byte, _ error) []byte { return b }

func TestNormalizeOID(t *testing.T) {
	for in, want := range map[string]string{"1.3.6.1": ".1.3.6.1", ".1.3.6.1.2.1.1.1.0": ".1.3.6.1.2.1.1.1.0"} {
		if got, err := NormalizeOID(in); err != nil || got != want {
			t.Errorf("NormalizeOID(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "sysDescr.0", "1..3", "1.3.-6", "1.3.99999999999"} {
		if _, err := NormalizeOID(bad); err == nil {
			t.Errorf("NormalizeOID(%q) accepted", bad)
		}
	}
}

// TestWriteCorpus refreshes the committed seeds of FuzzDecodePacket: responses of every
// value type, as agents send them (OUTPOST_WRITE_CORPUS=1).
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("OUTPOST_WRITE_CORPUS") != "1" {
		t.Skip("set OUTPOST_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodePacket")
	os.MkdirAll(dir, 0o755)
	vars := [][]gosnmp.SnmpPDU{
		{{Name: ".1.3.6.1.2.1.1.1.0", Type: gosnmp.OctetString, Value: "Cisco IOS Software, C2960X"}, {Name: ".1.3.6.1.2.1.1.3.0", Type: gosnmp.TimeTicks, Value: uint32(99)}},
		{{Name: ".1.3.6.1.2.1.2.2.1.6.1", Type: gosnmp.OctetString, Value: []byte{0, 0x1b, 0x54, 1, 2, 3}}, {Name: ".1.3.6.1.2.1.2.2.1.10.1", Type: gosnmp.Counter32, Value: uint32(4000000000)}},
		{{Name: ".1.3.6.1.2.1.31.1.1.1.6.1", Type: gosnmp.Counter64, Value: uint64(1 << 60)}, {Name: ".1.3.6.1.2.1.4.20.1.1.10.0.0.1", Type: gosnmp.IPAddress, Value: "10.0.0.1"}},
		{{Name: ".1.3.6.1.2.1.1.2.0", Type: gosnmp.ObjectIdentifier, Value: ".1.3.6.1.4.1.9.1.1208"}, {Name: ".1.3.6.1.2.1.1.9.0", Type: gosnmp.NoSuchObject}, {Name: ".1.3.6.1.2.1.99", Type: gosnmp.EndOfMibView}},
		{{Name: ".1.3.6.1.2.1.2.2.1.5.1", Type: gosnmp.Gauge32, Value: uint32(1000000000)}, {Name: ".1.3.6.1.2.1.2.2.1.8.1", Type: gosnmp.Integer, Value: -1}},
		{{Name: ".1.3.6.1.4.1.2021.10.1.6.1", Type: gosnmp.Opaque, Value: []byte{0x9f, 0x78, 0x04, 0x3f, 0x80, 0, 0}}},
	}
	for i, v := range vars {
		p := &gosnmp.SnmpPacket{Version: gosnmp.Version2c, Community: "public", PDUType: gosnmp.GetResponse, RequestID: uint32(i + 1), Variables: v}
		b, err := p.MarshalMsg()
		if err != nil {
			t.Fatal(err)
		}
		writeSeed(t, filepath.Join(dir, "response-"+string(rune('a'+i))), b)
	}
}

func writeSeed(t *testing.T, path string, b []byte) {
	const hexd = "0123456789abcdef"
	s := []byte("go test fuzz v1\n[]byte(\"")
	for _, c := range b {
		s = append(s, '\\', 'x', hexd[c>>4], hexd[c&15])
	}
	if err := os.WriteFile(path, append(s, "\")\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodePacket: whatever an agent (or a hostile host) answers, decoding its values
// never panics and always gives JSON.
func FuzzDecodePacket(f *testing.F) {
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		g := &gosnmp.GoSNMP{Version: gosnmp.Version2c, Logger: gosnmp.NewLogger(nil)}
		p, err := g.SnmpDecodePacket(b)
		if err != nil || p == nil {
			return
		}
		for _, v := range p.Variables {
			d := Decode(v)
			if _, err := json.Marshal(d); err != nil {
				t.Fatalf("Decode(%+v) = %+v does not marshal: %v", v, d, err)
			}
			if s, ok := d.Value.(string); ok && (!utf8.ValidString(s) || len(s) > 2*MaxOctets+16) {
				t.Fatalf("value %q", s)
			}
		}
	})
}

// FuzzOctets: octet strings render as text, hex or MAC, always valid UTF-8 and bounded.
func FuzzOctets(f *testing.F) {
	f.Add([]byte("GigabitEthernet1/0/1"), false)
	f.Add([]byte{0, 1, 2, 3, 4, 5}, true)
	f.Fuzz(func(t *testing.T, b []byte, mac bool) {
		s, enc := Octets(b, mac)
		if !utf8.ValidString(s) || len(s) > 2*MaxOctets {
			t.Fatalf("Octets(%q) = %q", b, s)
		}
		if enc == "" && !Printable([]byte(s)) {
			t.Fatalf("text %q is not printable", s)
		}
	})
}
