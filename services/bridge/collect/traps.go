package collect

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gosnmp/gosnmp"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// OIDs of SNMPv2-MIB every agent speaks, so traps are named without loading MIBs.
const (
	oidSnmpTrapOID = ".1.3.6.1.6.3.1.1.4.1.0"
	oidSysUpTime   = ".1.3.6.1.2.1.1.3.0"
	oidIfIndex     = ".1.3.6.1.2.1.2.2.1.1."
	oidStdTraps    = ".1.3.6.1.6.3.1.1.5."
)

// stdTrap is one of the generic traps (RFC 3418 / RFC 2863): its name, the event type it
// makes (linkUp and linkDown share "link", so linkUp clears linkDown) and its severity.
type stdTrap struct{ name, typ, severity string }

// stdTraps by the last arc of 1.3.6.1.6.3.1.1.5.N; SNMPv1's generic-trap is N-1.
var stdTraps = map[int]stdTrap{
	1: {"coldStart", "restart", api.SeverityWarning},
	2: {"warmStart", "restart", api.SeverityInfo},
	3: {"linkDown", "link", api.SeverityMajor},
	4: {"linkUp", "link", api.SeverityClear},
	5: {"authenticationFailure", "snmp_auth", api.SeverityMinor},
	6: {"egpNeighborLoss", "egp", api.SeverityMinor},
}

func (c *Collectors) startTraps(ctx context.Context) error {
	c.counter(api.SourceTrap)
	batch := c.batcher(ctx, api.SourceTrap)
	// Bind first, so a bad address fails the start; the listener then binds it itself.
	probe, err := net.ListenPacket("udp", c.cfg.Traps)
	if err != nil {
		return fmt.Errorf("--collect-traps %s: %w", c.cfg.Traps, err)
	}
	addr := probe.LocalAddr().String()
	probe.Close()
	tl := gosnmp.NewTrapListener()
	logger := gosnmp.NewLogger(trapLog{c: c, ctx: ctx})
	tl.Params = &gosnmp.GoSNMP{Port: 162, Transport: "udp", Version: gosnmp.Version2c, Community: "public",
		Timeout: 2 * time.Second, Retries: 0, MaxOids: gosnmp.MaxOids, Logger: logger}
	if len(c.cfg.TrapUsers) > 0 {
		// v3: the users' table reads traps (the sender's engine is authoritative) and
		// informs (this collector's engine is: senders discover its ID, reported on a
		// message with an unknown one).
		engine, err := engineID(c.cfg.TrapEngineID, c.cfg.Site)
		if err != nil {
			return err
		}
		table, err := usmTable(c.cfg.TrapUsers, engine, logger)
		if err != nil {
			return err
		}
		// Version3 makes the listener authenticate v3 messages; v1/v2c ones are still read
		// by their own header's version.
		tl.Params.Version = gosnmp.Version3
		tl.Params.SecurityModel = gosnmp.UserSecurityModel
		tl.Params.SecurityParameters = &gosnmp.UsmSecurityParameters{AuthoritativeEngineID: engine}
		tl.Params.SetTrapSecurityParametersTable(table)
	}
	tl.OnNewTrap = func(p *gosnmp.SnmpPacket, from *net.UDPAddr) {
		ev := trapEvent(p, from, c.clock.Now())
		ev.Site = c.cfg.Site
		// The listener acknowledges an inform when this returns: its batch is stored
		// first. A trap has no acknowledgement: it lingers with its batch.
		if p.PDUType == gosnmp.InformRequest {
			batch.addNow(ev)
			return
		}
		batch.add(ev)
	}
	errc := make(chan error, 1)
	startWait := c.clock.NewTimer(5 * time.Second)
	defer startWait.Stop()
	c.wg.Add(1)
	go func() { defer c.wg.Done(); errc <- tl.Listen(addr) }()
	select {
	case <-tl.Listening():
	case err := <-errc:
		return fmt.Errorf("--collect-traps %s: %w", c.cfg.Traps, err)
	case <-startWait.C():
		tl.Close()
		return fmt.Errorf("--collect-traps %s: the trap listener did not start", c.cfg.Traps)
	}
	c.Addrs["trap"] = probe.LocalAddr()
	stop := context.AfterFunc(ctx, tl.Close)
	c.stops = append(c.stops, func() { stop(); tl.Close() })
	c.log.Info("trap collector listening (udp, SNMP v1/v2c, v3 for its users)", "addr", addr, "v3_users", len(c.cfg.TrapUsers))
	return nil
}

// trapLog counts the packets the listener could not read (it only logs them).
type trapLog struct {
	c   *Collectors
	ctx context.Context
}

func (l trapLog) Print(v ...any) { l.Printf("%s", fmt.Sprint(v...)) }
func (l trapLog) Printf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	// The listener logs a bad packet once as "TrapListener: error in …" (and the decoder
	// may log its own detail first): count that line only.
	if strings.Contains(msg, "TrapListener: error in") {
		l.c.reject(l.ctx, api.SourceTrap, "unreadable SNMP packet: "+strings.TrimSpace(msg), nil)
	}
}

// trapEvent maps a trap: node is the agent (v1's agent-addr, else the sender), type and
// severity come from the standard trap's name (or the trap OID), resource from an ifIndex
// varbind; every varbind is kept in Fields by OID.
func trapEvent(p *gosnmp.SnmpPacket, from *net.UDPAddr, now time.Time) *envelope.Event {
	node := from.IP.String()
	var trapOID string
	fields := map[string]string{"snmp_version": p.Version.String()}
	resource := ""
	if p.Version == gosnmp.Version1 {
		if p.AgentAddress != "" && p.AgentAddress != "0.0.0.0" {
			node = p.AgentAddress
		}
		if p.GenericTrap >= 0 && p.GenericTrap <= 5 {
			trapOID = fmt.Sprintf("%s%d", oidStdTraps, p.GenericTrap+1)
		} else {
			trapOID = fmt.Sprintf("%s.0.%d", p.Enterprise, p.SpecificTrap)
		}
	}
	for _, v := range p.Variables {
		switch {
		case v.Name == oidSnmpTrapOID:
			if s, ok := v.Value.(string); ok {
				trapOID = s
			}
			continue
		case v.Name == oidSysUpTime:
			continue
		case strings.HasPrefix(v.Name, oidIfIndex):
			resource = fmt.Sprintf("ifIndex %v", v.Value)
		}
		if len(fields) < api.MaxAdditional {
			fields[strings.TrimPrefix(v.Name, ".")] = varText(v)
		}
	}
	trapOID = "." + strings.TrimPrefix(trapOID, ".")
	fields["trap_oid"] = strings.TrimPrefix(trapOID, ".")
	ev := &envelope.Event{ID: envelope.NewID(), Source: api.SourceTrap, Node: node, Resource: resource, Time: now.UTC(), Fields: fields}
	var n int
	if _, err := fmt.Sscanf(strings.TrimPrefix(trapOID, oidStdTraps), "%d", &n); err == nil && strings.HasPrefix(trapOID, oidStdTraps) {
		if t, ok := stdTraps[n]; ok {
			ev.Type, ev.Severity, ev.Metric = t.typ, t.severity, ""
			fields["trap"] = t.name
			ev.Message = t.name + " from " + node
			if resource != "" {
				ev.Message += " (" + resource + ")"
			}
			return ev
		}
	}
	ev.Type, ev.Severity = strings.TrimPrefix(trapOID, "."), api.SeverityWarning
	ev.Message = "trap " + ev.Type + " from " + node
	return ev
}

func varText(v gosnmp.SnmpPDU) string {
	switch x := v.Value.(type) {
	case []byte:
		return string(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v.Value)
}
