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

	"github.com/outpost-dev/outpost/services/bridge/probe"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/snmpc"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/target"
)

// Config of snmp_walk.
type Config struct {
	MaxRoots    int
	MaxRows     int // hard cap of max_rows
	DefaultRows int
}

// Params of an snmp_walk probe.
type Params struct {
	snmpc.Common
	MaxRepetitions int   `json:"max_repetitions,omitempty"`
	MaxRows        int   `json:"max_rows,omitempty"`
	PageSize       int   `json:"page_size,omitempty"`
	Bulk           *bool `json:"bulk,omitempty"`
}

// Page is one streamed chunk of rows.
type Page struct {
	Root   string        `json:"root"`
	Offset int           `json:"offset"`
	Values []snmpc.Value `json:"values"`
}

// Root is the outcome of one subtree.
type Root struct {
	OID  string `json:"oid"`
	Rows int    `json:"rows"`
}

// Result is the final data of a walk.
type Result struct {
	IP   string `json:"ip"`
	Port int    `json:"port"`
	snmpc.Attempt
	Roots      []Root `json:"roots"`
	Rows       int    `json:"rows"`
	Truncated  bool   `json:"truncated"`
	Pages      int    `json:"pages"`
	DurationMS int64  `json:"duration_ms"`
	// Values carries the rows when the caller takes no stream.
	Values []snmpc.Value `json:"values,omitempty"`
}

type factory struct{}

// NewFactory returns the snmp_walk kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Type() string       { return "snmp_walk" }
func (factory) Capability() string { return "snmp" }
func (factory) DefaultConfig() any {
	return Config{MaxRoots: 64, MaxRows: 500_000, DefaultRows: 50_000}
}

func (factory) Schema() probe.Schema {
	return probe.Schema{
		Description: "SNMP walk of subtrees (GETBULK for v2c/v3), rows streamed in pages.",
		Params: map[string]probe.Param{
			"oids":            {Type: "list", Description: "numeric roots of the subtrees (1.3.6.1.2.1.2.2)", Required: true},
			"version":         {Type: "string", Description: "1, 2c or 3; default: each credential's"},
			"port":            {Type: "int", Description: "UDP port", Default: 161},
			"timeout":         {Type: "duration", Description: "per request try", Default: "2s"},
			"retries":         {Type: "int", Description: "tries after the first (0-5)", Default: 1},
			"context_name":    {Type: "string", Description: "SNMPv3 context name"},
			"max_repetitions": {Type: "int", Description: "GETBULK max-repetitions (1-100)", Default: 25},
			"max_rows":        {Type: "int", Description: "stop after this many rows in all (truncated)", Default: 50000},
			"page_size":       {Type: "int", Description: "rows per streamed page", Default: 500},
			"bulk":            {Type: "bool", Description: "use GETBULK where the version has it", Default: true},
		},
	}
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
	roots, port, o, err := p.Options(r.cfg.MaxRoots)
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
