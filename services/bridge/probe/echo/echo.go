// Package echo is the probe kind for tests and benchmarks: it answers its params' message,
// optionally after a delay, optionally failing.
package echo

import (
	"context"
	"time"

	"github.com/outpost-dev/outpost/libs/probes"
	contract "github.com/outpost-dev/outpost/libs/probes/echo"
	"github.com/outpost-dev/outpost/services/bridge/probe"
)

// The contract of the kind (libs/probes/echo): what a probe asks and what it answers.
type (
	Params = contract.Params
	Result = contract.Result
)

// Config limits what an echo probe may ask.
type Config struct {
	MaxMessage int           `yaml:"max_message"` // bytes (default 64 KiB)
	MaxDelay   time.Duration `yaml:"max_delay"`   // default 10 min
}

type factory struct{}

// NewFactory returns the echo kind.
func NewFactory() probe.Factory { return factory{} }

func (factory) Spec() probes.Spec  { return contract.Spec }
func (factory) DefaultConfig() any { return Config{MaxMessage: 64 << 10, MaxDelay: 10 * time.Minute} }
func (factory) Create(_ context.Context, _ probe.Settings, cfg any) (probe.Runner, error) {
	c, ok := cfg.(Config)
	if !ok {
		return nil, probe.Errorf(probe.CodeInternal, "echo: config of type %T", cfg)
	}
	return runner{c}, nil
}

type runner struct{ cfg Config }

func (r runner) Run(ctx context.Context, req probe.Request, _ probe.Emit) (any, error) {
	var p Params
	if err := probe.DecodeParams(req.Params, &p); err != nil {
		return nil, err
	}
	if len(p.Msg) > r.cfg.MaxMessage {
		return nil, probe.Errorf(probe.CodeBadParams, "params.msg is %d bytes, beyond the %d-byte limit", len(p.Msg), r.cfg.MaxMessage)
	}
	if p.Size < 0 || p.Size > 64<<20 {
		return nil, probe.Errorf(probe.CodeBadParams, "params.size %d: want 0..%d", p.Size, 64<<20)
	}
	if p.Delay != "" {
		d, err := time.ParseDuration(p.Delay)
		if err != nil || d < 0 {
			return nil, probe.Errorf(probe.CodeBadParams, "params.delay %q: want a duration such as 500ms", p.Delay)
		}
		if d > r.cfg.MaxDelay {
			return nil, probe.Errorf(probe.CodeBadParams, "params.delay %s is beyond the %s limit", d, r.cfg.MaxDelay)
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if p.Fail != "" {
		return nil, probe.Errorf(p.Fail, "failed on request")
	}
	res := Result{Msg: p.Msg}
	if pad := p.Size - len(p.Msg); pad > 0 {
		b := make([]byte, pad)
		for i := range b {
			b[i] = 'x'
		}
		res.Padding = string(b)
	}
	return res, nil
}
