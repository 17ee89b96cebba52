package bus

// Partitioning of the CMDB ingest stream, the producers' half: discovery and import publish a
// payload on cmdb.ingest.<partition> so that every payload about one device lands on one
// partition, and the CMDB reconciles each partition one payload at a time.

import (
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// CMDBIngestSubjectFor is the subject a producer publishes a CI payload on:
// cmdb.ingest.<CMDBPartition(payload, partitions)>. Every payload about one device lands on one
// partition, and the CMDB reconciles one partition one payload at a time, so the same device
// is never reconciled twice at once. partitions must be the CMDB's configured count.
func CMDBIngestSubjectFor(payload envelope.CIPayload, partitions int) string {
	return CMDBIngestSubject(CMDBPartition(payload, partitions))
}

// CMDBPartition maps a payload to one of n partitions, by a stable hash (FNV-1a) of
// CMDBPartitionKey; 0 when n < 2 or the payload offers no identifier.
func CMDBPartition(payload envelope.CIPayload, n int) int {
	key := CMDBPartitionKey(payload)
	if n < 2 || key == "" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// CMDBPartitionKey returns the identity a payload is partitioned by: for the first item without
// a parent (the device the payload is about) that offers one, its strongest identifier —
// its serial number unless it is a placeholder, else the smallest MAC of its adapters (its
// child items), else its name, else its native key. It returns "" when no item offers any.
//
// Two payloads about one device can still land on different partitions (one knows the
// serial, the other only a MAC): the CMDB store stays correct then, partitioning only makes
// concurrent reconciliation of one device rare. Values are compared as the CMDB's
// identification does: trimmed, lower case, MACs in aa:bb:cc:dd:ee:ff form.
func CMDBPartitionKey(payload envelope.CIPayload) string {
	for _, it := range payload.Items {
		if it.Parent != "" {
			continue
		}
		if v, ok := cmdbIdentifier(it.Attributes["serial_number"], false); ok {
			return "serial=" + v
		}
		mac := ""
		if it.Ref != "" {
			for _, c := range payload.Items {
				if c.Parent != it.Ref {
					continue
				}
				if v, ok := cmdbIdentifier(c.Attributes["mac_address"], true); ok && (mac == "" || v < mac) {
					mac = v // the smallest: stable whatever order the adapters come in
				}
			}
		}
		if mac != "" {
			return "mac=" + mac
		}
		if v, ok := cmdbIdentifier(it.Attributes["name"], false); ok {
			return "name=" + v
		}
		if k := strings.TrimSpace(it.NativeKey); k != "" {
			return "native=" + payload.Source + "/" + k
		}
	}
	return ""
}

// cmdbIdentifier returns the normalised text of an attribute value that can identify, or false
// for a missing, non-text or placeholder value.
func cmdbIdentifier(v any, isMAC bool) (string, bool) {
	s, ok := v.(string)
	if !ok {
		return "", false
	}
	s = strings.ToLower(strings.TrimSpace(s))
	if isMAC {
		s = NormalizeMAC(s)
	}
	if IsJunkIdentifier(s) {
		return "", false
	}
	return s, true
}

// NormalizeMAC mirrors classes.NormalizeMAC: colon, dash, Cisco dotted and bare-hex
// notations all become aa:bb:cc:dd:ee:ff. s is already trimmed and lower case.
func NormalizeMAC(s string) string {
	if len(s) == 12 {
		if _, err := strconv.ParseUint(s, 16, 64); err == nil {
			return s[0:2] + ":" + s[2:4] + ":" + s[4:6] + ":" + s[6:8] + ":" + s[8:10] + ":" + s[10:12]
		}
	}
	if hw, err := net.ParseMAC(s); err == nil {
		return hw.String()
	}
	return s
}

// junkIdentifiers duplicates the default junk_values of the CMDB class model
// (services/cmdb/classes/model/identification.yaml), which producers cannot read; a test
// keeps the two lists equal. A deployment's extra junk values (a classes directory) are not
// known here: such a value only makes its payloads share a partition, never merge CIs.
var junkIdentifiers = map[string]bool{
	"to be filled by o.e.m.": true,
	"to be filled by oem":    true,
	"not specified":          true,
	"0":                      true,
	"default string":         true,
	"none":                   true,
	"system serial number":   true,
	"chassis serial number":  true,
	"not available":          true,
	"not applicable":         true,
	"n/a":                    true,
	"na":                     true,
	"unknown":                true,
	"invalid":                true,
	"oem":                    true,
	"o.e.m.":                 true,
	"serial number":          true,
	"123456789":              true,
	"1234567890":             true,
	"0123456789":             true,
	"00:00:00:00:00:00":      true,
	"ff:ff:ff:ff:ff:ff":      true,
}

// IsJunkIdentifier mirrors classes.Model.IsJunk with the default model: blank, a listed placeholder,
// or one character repeated ("0000000"). s is trimmed and lower case.
func IsJunkIdentifier(s string) bool {
	if s == "" || junkIdentifiers[s] {
		return true
	}
	return len(s) >= 3 && strings.Count(s, s[:1]) == len(s)
}

// JunkIdentifiers lists the placeholder values that never identify (for tests that keep the
// list equal to the CMDB class model's).
func JunkIdentifiers() []string {
	out := make([]string, 0, len(junkIdentifiers))
	for v := range junkIdentifiers {
		out = append(out, v)
	}
	return out
}
