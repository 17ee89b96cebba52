package ire

import (
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strings"

	"github.com/outpost-dev/outpost/libs/envelope"
	"github.com/outpost-dev/outpost/services/cmdb/classes"
)

// PartitionKey returns a stable identity hash of an item, from its strongest non-junk
// identifier, so that a publisher can route every payload about one device to the same
// cmdb.ingest.<partition> subject and the device is never reconciled twice at once in one
// process. Identifiers taken from child items (adapter MACs) need the payload: use
// PayloadPartitionKey for that. It returns "" when the item offers no identifier (such an
// item fails validation anyway).
//
// Two payloads about one device can still hash differently (one knows the serial, the
// other only a MAC); the store keeps that case correct, partitioning only makes it rare.
//
// Producers do not route with this: they use cmdb.IngestSubject (services/cmdb/partition.go,
// bound for libs), which needs no class model. The two keys do not hash alike.
func PartitionKey(m *classes.Model, item envelope.CIItem) string {
	return partitionKey(m, item, nil)
}

// PayloadPartitionKey returns the partition key of a payload: that of its first item
// without a parent (the device the payload is about), with its children taken into account.
func PayloadPartitionKey(m *classes.Model, p envelope.CIPayload) string {
	for _, it := range p.Items {
		if it.Parent != "" {
			continue
		}
		var children []envelope.CIItem
		for _, c := range p.Items {
			if c.Parent == it.Ref && it.Ref != "" {
				children = append(children, c)
			}
		}
		if k := partitionKey(m, it, children); k != "" {
			return k
		}
	}
	return ""
}

// Partition maps a key to one of n partitions (0 when n < 2 or the key is empty).
func Partition(key string, n int) int {
	if n < 2 || key == "" {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

func partitionKey(m *classes.Model, raw envelope.CIItem, children []envelope.CIItem) string {
	fam, ok := m.Family(raw.Class)
	if !ok {
		return ""
	}
	value := func(it envelope.CIItem, r classes.Rule, attr string) (string, bool) {
		if attr == classes.ClassAttribute {
			return it.Class, true
		}
		c, ok := m.Class(it.Class)
		if !ok {
			return "", false
		}
		t, ok := c.Attributes[attr]
		if !ok || it.Attributes[attr] == nil {
			return "", false
		}
		cv, err := t.Canonical(it.Attributes[attr])
		if err != nil {
			return "", false
		}
		v := classes.IdentifierValue(cv)
		if v == "" || (!r.AllowJunk && m.IsJunk(v)) {
			return "", false
		}
		return v, true
	}
	for _, r := range fam.Rules {
		var parts []string
		if r.Children != nil {
			for _, c := range children {
				if f, ok := m.Family(c.Class); !ok || f.Name != r.Children.Family {
					continue
				}
				if v, ok := value(c, r, r.Children.Attribute); ok && (len(parts) == 0 || v < parts[0]) {
					parts = []string{v} // the smallest MAC: stable whatever the adapter order
				}
			}
		} else {
			for _, a := range r.Attributes {
				v, ok := value(raw, r, a)
				if !ok {
					parts = nil
					break
				}
				parts = append(parts, v)
			}
		}
		if len(parts) > 0 {
			return hash(fam.Name + "/" + r.Name + "=" + strings.Join(parts, "|"))
		}
	}
	if k := strings.TrimSpace(raw.NativeKey); k != "" {
		return hash(fam.Name + "/native=" + k)
	}
	return ""
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// PartitionKey is PartitionKey with the engine's class model.
func (e *Engine) PartitionKey(item envelope.CIItem) string { return PartitionKey(e.model, item) }
