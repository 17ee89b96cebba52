// Package execlimit holds what the probe kinds that run commands on a remote host
// (ssh_exec, winrm_exec) share: the operator's limits in the bridge config, and the checks
// of a probe's command list, timeouts and output budget against them. How a command runs
// (an SSH session and its signals, a WinRM shell) stays in each kind.
package execlimit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/outpost-dev/outpost/services/bridge/probe/internal/capture"
	"github.com/outpost-dev/outpost/services/bridge/probe/internal/param"
)

// Limits are an exec kind's settings in the bridge config. A kind embeds them inline in
// its Config (`yaml:",inline"`), so the keys stay flat: kinds.ssh_exec.max_commands.
type Limits struct {
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	CommandTimeout time.Duration `yaml:"command_timeout"` // default per command
	MaxCommandTime time.Duration `yaml:"max_command_time"`
	MaxCommands    int           `yaml:"max_commands"`
	MaxOutput      int           `yaml:"max_output"` // per stream of one command (bounded by the chunk size)
}

// maxConnectTimeout bounds what a probe may ask for connecting and logging in.
const maxConnectTimeout = 5 * time.Minute

// Default is the limits an exec kind starts with; kinds differ only in how many commands
// one probe may run.
func Default(maxCommands int) Limits {
	return Limits{ConnectTimeout: 15 * time.Second, CommandTimeout: 120 * time.Second, MaxCommandTime: 30 * time.Minute,
		MaxCommands: maxCommands, MaxOutput: 1 << 20}
}

// Validate reports every problem of an operator's limits.
func (l Limits) Validate() error {
	var errs []error
	if l.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("connect_timeout: want a positive duration"))
	}
	if l.CommandTimeout <= 0 || l.MaxCommandTime < l.CommandTimeout {
		errs = append(errs, errors.New("command_timeout: want a positive duration no longer than max_command_time"))
	}
	if l.MaxCommands < 1 {
		errs = append(errs, errors.New("max_commands: want at least 1"))
	}
	if l.MaxOutput < 1024 {
		errs = append(errs, errors.New("max_output: want at least 1024 bytes"))
	}
	return errors.Join(errs...)
}

// Timeouts checks a probe's command list (params.commands) and returns each command's
// timeout: at least one command and no more than MaxCommands, none empty, and each timeout
// (the command's own, else params.timeout, else CommandTimeout) within MaxCommandTime.
// fields reads a command's text and its own timeout out of the kind's command type.
func Timeouts[C any](l Limits, cmds []C, timeout string, fields func(C) (cmd, timeout string)) ([]time.Duration, error) {
	if len(cmds) == 0 {
		return nil, param.Bad("commands", "empty: give at least one command")
	}
	if len(cmds) > l.MaxCommands {
		return nil, param.Bad("commands", "%d commands is beyond the limit of %d", len(cmds), l.MaxCommands)
	}
	def, err := param.Duration("timeout", timeout, l.CommandTimeout, l.MaxCommandTime)
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, len(cmds))
	for i, c := range cmds {
		cmd, own := fields(c)
		if strings.TrimSpace(cmd) == "" {
			return nil, param.Bad(fmt.Sprintf("commands[%d]", i), "empty command")
		}
		if out[i], err = param.Duration(fmt.Sprintf("commands[%d].timeout", i), own, def, l.MaxCommandTime); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Connect checks params.connect_timeout ("" gives ConnectTimeout).
func (l Limits) Connect(asked string) (time.Duration, error) {
	return param.Duration("connect_timeout", asked, l.ConnectTimeout, maxConnectTimeout)
}

// PerStream checks params.max_output (0 gives the default) and returns the bytes kept per
// stream of each of n commands: within MaxOutput, and small enough that the result fits in
// the chunk of chunkMax bytes (the settings' MaxOutput) — two streams per command, each up
// to twice its size once escaped in JSON.
func (l Limits) PerStream(asked, chunkMax, n int) (int, error) {
	perStream := max(1024, capture.Limit(chunkMax)/(4*n+2))
	return param.Int("max_output", asked, min(64<<10, perStream), min(l.MaxOutput, perStream))
}

// Stop says whether a command list stops after a command's output: when the connection or
// shell is gone (an error without a timeout or an exit code), or with stop_on_error after
// a command that failed or timed out.
func Stop(stopOnError bool, errText string, timedOut bool, exitCode *int) bool {
	if errText != "" && !timedOut && exitCode == nil {
		return true
	}
	return stopOnError && (timedOut || exitCode == nil || *exitCode != 0)
}
