// Package snmpget is the snmp_get probe kind: GET a list of OIDs over SNMP v1, v2c or v3,
// trying the credentials in order (type snmp: Secret is the community, fields.version
// "1" or "2c"; type snmpv3: Username, fields auth_protocol/auth_password (or Secret),
// priv_protocol/priv_password, security_level, context_name). Values are decoded to JSON
// types: text or hex for octet strings, MACs for physical addresses, numbers for
// counters, gauges and timeticks, dotted strings for OIDs and IP addresses.
package snmpget

import (
	"context"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/snmpget"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/snmpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/snmpget): what a probe asks and what it answers.
type (
	Params = contract.Params
	Result = contract.Result
)

// Config of snmp_get.
type Config struct {
	MaxOIDs int `yaml:"max_oids"`
}

type factory struct{}

// NewFactory returns the snmp_get kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec  { return contract.Spec }
func (factory) DefaultConfig() any { return Config{MaxOIDs: 256} }

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "snmp_get: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

func (r *runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	if err := probe.CheckCredentials("snmp_get", req.Credentials); err != nil {
		return nil, err
	}
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	oids, port, o, err := snmpc.CheckCommon(p, r.cfg.MaxOIDs)
	if err != nil {
		return nil, err
	}
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	res := Result{IP: ep.IP.String(), Port: ep.Port, Values: []snmpc.Value{}}
	at, err := snmpc.Try(ctx, r.set, ep, req.Credentials, o, func(g *gosnmp.GoSNMP) error {
		res.Values = res.Values[:0]
		for i := 0; i < len(oids); i += gosnmp.MaxOids {
			pkt, err := g.Get(oids[i:min(i+gosnmp.MaxOids, len(oids))])
			if err != nil {
				return err
			}
			if err := snmpc.Check(pkt); err != nil && g.Version != gosnmp.Version1 {
				return err
			} else if err != nil {
				// v1 answers noSuchName for the whole request: fetch one by one
				for _, oid := range oids[i:min(i+gosnmp.MaxOids, len(oids))] {
					one, err := g.Get([]string{oid})
					if err != nil {
						return err
					}
					if snmpc.Check(one) != nil {
						res.Values = append(res.Values, snmpc.Value{OID: oid, Type: "no_such_name"})
						continue
					}
					for _, v := range one.Variables {
						res.Values = append(res.Values, snmpc.Decode(v))
					}
				}
				continue
			}
			for _, v := range pkt.Variables {
				res.Values = append(res.Values, snmpc.Decode(v))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Attempt = at
	return res, nil
}
