// Copied verbatim from services/cmdb/partition.go: moves to libs. Until then both copies must
// hash the same way (partition_test.go pins known values).

package discovery

// This file is self-contained on purpose (standard library and libs/envelope only): it is
// the producers' half of CMDB partitioning and belongs in libs, where discovery and import
// can call it without importing a service. Move it verbatim; if it lands in libs/bus, let
// IngestSubject call bus.CMDBIngestSubject instead of spelling the subject.

import (
	"hash/fnv"
	"net"
	"strconv"
	"strings"

	"github.com/outpost-dev/outpost/libs/envelope"
)

// IngestSubject is the subject a producer publishes a CI payload on:
// cmdb.ingest.<Partition(payload, partitions)>. Every payload about one device lands on one
// partition, and the CMDB reconciles one partition one payload at a time, so the same device
// is never reconciled twice at once. partitions must be the CMDB's configured count.
func IngestSubject(payload envelope.CIPayload, partitions int) string {
	return "cmdb.ingest." + strconv.Itoa(Partition(payload, partitions))
}

// Partition maps a payload to one of n partitions, by a stable hash (FNV-1a) of
// PartitionKey; 0 when n < 2 or the payload offers no identifier.
func Partition(payload envelope.CIPayload, n int) int {
	key := PartitionKey(payload)
	if n < 2 || key == "" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// PartitionKey returns the identity a payload is partitioned by: for the first item without
// a parent (the device the payload is about) that offers one, its strongest identifier —
// its serial number unless it is a placeholder, else the smallest MAC of its adapters (its
// child items), else its name, else its native key. It returns "" when no item offers any.
//
// Two payloads about one device can still land on different partitions (one knows the
// serial, the other only a MAC): the CMDB store stays correct then, partitioning only makes
// concurrent reconciliation of one device rare. Values are compared as the CMDB's
// identification does: trimmed, lower case, MACs in aa:bb:cc:dd:ee:ff form.
func PartitionKey(payload envelope.CIPayload) string {
	for _, it := range payload.Items {
		if it.Parent != "" {
			continue
		}
		if v, ok := identifier(it.Attributes["serial_number"], false); ok {
			return "serial=" + v
		}
		mac := ""
		if it.Ref != "" {
			for _, c := range payload.Items {
				if c.Parent != it.Ref {
					continue
				}
				if v, ok := identifier(c.Attributes["mac_address"], true); ok && (mac == "" || v < mac) {
					mac = v // the smallest: stable whatever order the adapters come in
				}
			}
		}
		if mac != "" {
			return "mac=" + mac
		}
		if v, ok := identifier(it.Attributes["name"], false); ok {
			return "name=" + v
		}
		if k := strings.TrimSpace(it.NativeKey); k != "" {
			return "native=" + payload.Source + "/" + k
		}
	}
	return ""
}

// identifier returns the normalised text of an attribute value that can identify, or false
// for a missing, non-text or placeholder value.
func identifier(v any, isMAC bool) (string, bool) {
	s, ok := v.(string)
	if !ok {
		return "", false
	}
	s = strings.ToLower(strings.TrimSpace(s))
	if isMAC {
		s = normalizeMAC(s)
	}
	if isJunk(s) {
		return "", false
	}
	return s, true
}

// normalizeMAC mirrors classes.NormalizeMAC: colon, dash, Cisco dotted and bare-hex
// notations all become aa:bb:cc:dd:ee:ff. s is already trimmed and lower case.
func normalizeMAC(s string) string {
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

// junkValues duplicates the default junk_values of the CMDB class model
// (services/cmdb/classes/model/identification.yaml), which producers cannot read; a test
// keeps the two lists equal. A deployment's extra junk values (a classes directory) are not
// known here: such a value only makes its payloads share a partition, never merge CIs.
var junkValues = map[string]bool{
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

// isJunk mirrors classes.Model.IsJunk with the default model: blank, a listed placeholder,
// or one character repeated ("0000000"). s is trimmed and lower case.
func isJunk(s string) bool {
	if s == "" || junkValues[s] {
		return true
	}
	return len(s) >= 3 && strings.Count(s, s[:1]) == len(s)
}
