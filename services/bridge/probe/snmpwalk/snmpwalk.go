// Package snmpwalk is the snmp_walk probe kind: walk subtrees over SNMP — GETBULK for v2c
// and v3, GETNEXT for v1 — trying credentials in order (see snmpget for their shape).
// Rows are streamed through Emit in pages; the final data is a summary with the row count
// per root. A walk stops at max_rows and says so (truncated).
package snmpwalk

import (
	"context"
	"errors"
	"fmt"

	"github.com/gosnmp/gosnmp"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/snmpwalk"
	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/snmpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// The contract of the kind (libs/probes/snmpwalk): what a probe asks and what it answers.
type (
	Params = contract.Params
	Page   = contract.Page
	Root   = contract.Root
	Result = contract.Result
)

// Config of snmp_walk.
type Config struct {
	MaxRoots    int `yaml:"max_roots"`
	MaxRows     int `yaml:"max_rows"` // hard cap of max_rows
	DefaultRows int `yaml:"default_rows"`
}

type factory struct{}

// NewFactory returns the snmp_walk kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec { return contract.Spec }
func (factory) DefaultConfig() any {
	return Config{MaxRoots: 64, MaxRows: 500_000, DefaultRows: 50_000}
}

func (factory) Create(_ context.Context, set probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "snmp_walk: config of type %T", cfg)
	}
	return &runner{cfg: c, set: set}, nil
}

type runner struct {
	cfg Config
	set probe.Settings
}

var errEnough = errors.New("max_rows reached")

func (r *runner) Run(ctx context.Context, req probe.Request, emit probe.Emit) (any, error) {
	if err := probe.CheckCredentials("snmp_walk", req.Credentials); err != nil {
		return nil, err
	}
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	roots, port, o, err := snmpc.CheckCommon(p.Common, r.cfg.MaxRoots)
	if err != nil {
		return nil, err
	}
	reps, err := param.Int("max_repetitions", p.MaxRepetitions, 25, 100)
	if err != nil {
		return nil, err
	}
	o.MaxRepetitions = uint32(reps)
	maxRows, err := param.Int("max_rows", p.MaxRows, min(r.cfg.DefaultRows, r.cfg.MaxRows), r.cfg.MaxRows)
	if err != nil {
		return nil, err
	}
	pageSize, err := param.Int("page_size", p.PageSize, 500, 10_000)
	if err != nil {
		return nil, err
	}
	bulk := p.Bulk == nil || *p.Bulk
	ep, err := target.Resolve(ctx, r.set, req.Target, port)
	if err != nil {
		return nil, err
	}
	start := r.set.Time()
	limit := capture.Limit(r.set.MaxOutput)
	res := &Result{IP: ep.IP.String(), Port: ep.Port, Roots: []Root{}}
	at, err := snmpc.Try(ctx, r.set, ep, req.Credentials, o, func(g *gosnmp.GoSNMP) error {
		res.Roots, res.Rows, res.Values = res.Roots[:0], 0, nil
		for _, root := range roots {
			page := Page{Root: root, Values: []snmpc.Value{}}
			bytes := 0
			rows := 0
			flush := func() error {
				if len(page.Values) == 0 {
					return nil
				}
				if emit == nil {
					if len(res.Values)*80+bytes > limit {
						res.Truncated = true
						return errEnough
					}
					res.Values = append(res.Values, page.Values...)
				} else if err := emit(ctx, page); err != nil {
					return err
				}
				res.Pages++
				page = Page{Root: root, Offset: rows, Values: []snmpc.Value{}}
				bytes = 0
				return nil
			}
			walkFn := func(pdu gosnmp.SnmpPDU) error {
				if res.Rows >= maxRows {
					res.Truncated = true
					return errEnough
				}
				v := snmpc.Decode(pdu)
				page.Values = append(page.Values, v)
				bytes += len(v.OID) + len(fmt.Sprint(v.Value)) + len(v.Text) + 48
				rows++
				res.Rows++
				if len(page.Values) >= pageSize || bytes >= limit/2 {
					return flush()
				}
				return nil
			}
			var err error
			if bulk && g.Version != gosnmp.Version1 {
				err = g.BulkWalk(root, walkFn)
			} else {
				err = g.Walk(root, walkFn)
			}
			if err == nil || errors.Is(err, errEnough) {
				if ferr := flush(); ferr != nil && !errors.Is(ferr, errEnough) {
					return ferr
				}
			}
			res.Roots = append(res.Roots, Root{OID: root, Rows: rows})
			if errors.Is(err, errEnough) || res.Truncated {
				return nil
			}
			if err != nil {
				if res.Rows > 0 {
					// the credential worked: a failure now is the walk's, not the credential's
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return probe.Errorf(probe.CodeTimeout, "walk of %s stopped after %d rows: %v", root, res.Rows, err)
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Attempt = at
	res.DurationMS = r.set.Since(start).Milliseconds()
	return res, nil
}
