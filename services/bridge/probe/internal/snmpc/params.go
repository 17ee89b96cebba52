package snmpc

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/libs/probes/snmp"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
)

// Common are the params snmp_get and snmp_walk share (the contract's).
type Common = snmp.Common

// CheckCommon validates the common params and returns the OIDs, the port and the options.
func CheckCommon(c Common, maxOIDs int) ([]string, int, Options, error) {
	var o Options
	if len(c.OIDs) == 0 {
		return nil, 0, o, param.Bad("oids", "empty: give at least one OID (numeric, e.g. 1.3.6.1.2.1.1.1.0)")
	}
	if len(c.OIDs) > maxOIDs {
		return nil, 0, o, param.Bad("oids", "%d OIDs is beyond the limit of %d", len(c.OIDs), maxOIDs)
	}
	oids := make([]string, len(c.OIDs))
	for i, s := range c.OIDs {
		n, err := NormalizeOID(s)
		if err != nil {
			return nil, 0, o, param.Bad(fmt.Sprintf("oids[%d]", i), "%s: %v", param.Quote(s), err)
		}
		oids[i] = n
	}
	var err error
	if o.Version, err = ParseVersion("version", c.Version); err != nil {
		return nil, 0, o, err
	}
	port, err := param.Port("port", c.Port, 161)
	if err != nil {
		return nil, 0, o, err
	}
	if o.Timeout, err = param.Duration("timeout", c.Timeout, 2*time.Second, time.Minute); err != nil {
		return nil, 0, o, err
	}
	o.Retries = 1
	if c.Retries != nil {
		if *c.Retries < 0 || *c.Retries > 5 {
			return nil, 0, o, param.Bad("retries", "%d: want 0-5", *c.Retries)
		}
		o.Retries = *c.Retries
	}
	o.ContextName = c.ContextName
	return oids, port, o, nil
}

// NormalizeOID checks a numeric OID and returns it with a leading dot.
func NormalizeOID(s string) (string, error) {
	s = strings.TrimSpace(s)
	t := strings.TrimPrefix(s, ".")
	if t == "" {
		return "", fmt.Errorf("not an OID")
	}
	parts := strings.Split(t, ".")
	if len(parts) > 128 {
		return "", fmt.Errorf("more than 128 sub-identifiers")
	}
	for _, p := range parts {
		if _, err := strconv.ParseUint(p, 10, 32); err != nil {
			return "", fmt.Errorf("not a numeric OID (MIB names are not resolved on the bridge)")
		}
	}
	return "." + t, nil
}
