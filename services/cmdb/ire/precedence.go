package ire

import (
	"fmt"
	"strings"
)

// Precedence ranks sources per attribute: a source never overwrites a value set by a
// source ranked above it. Sources not listed rank below every listed one.
//
// A payload's source matches a listed name exactly or as a prefix before ":" so that
// "import:hr-csv" ranks as "import".
type Precedence struct {
	// Sources is the default order, highest first.
	Sources []string
	// Attributes overrides the order for single attributes (e.g. os_version trusted from
	// sccm above manual), highest first.
	Attributes map[string][]string
}

// DefaultPrecedence is manual > sccm > discovery > import.
func DefaultPrecedence() Precedence {
	return Precedence{Sources: []string{"manual", "sccm", "discovery", "import"}}
}

// ParsePrecedence reads "manual > sccm > discovery > import".
func ParsePrecedence(s string) (Precedence, error) {
	var p Precedence
	for _, part := range strings.Split(s, ">") {
		name := strings.TrimSpace(part)
		if name == "" {
			return Precedence{}, fmt.Errorf("precedence %q: empty source name", s)
		}
		p.Sources = append(p.Sources, name)
	}
	return p, nil
}

// Rank returns how strong source is for attr: higher wins, 0 for an unlisted source.
func (p Precedence) Rank(attr, source string) int {
	list := p.Sources
	if l, ok := p.Attributes[attr]; ok {
		list = l
	}
	for i, s := range list {
		if source == s || strings.HasPrefix(source, s+":") {
			return len(list) - i
		}
	}
	return 0
}
