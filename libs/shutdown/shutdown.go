// Package shutdown turns SIGINT/SIGTERM into an orderly stop with one overall deadline: the
// first signal cancels a context (the process drains: in-flight work finishes, outboxes
// flush), a second signal exits at once, and so does the deadline when the drain hangs. An
// operator who pressed Ctrl-C twice, or an orchestrator whose grace period is ending, should
// never wait on a stuck drain.
package shutdown

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
)

// ExitCode is the status of a process stopped by a second signal or the deadline: the
// drain did not finish.
const ExitCode = 1

// Config says how a process stops.
type Config struct {
	// Deadline bounds the whole drain, from the first signal.
	Deadline time.Duration
	Logger   *slog.Logger
	// Signals default to SIGINT and SIGTERM.
	Signals []os.Signal
	// Exit defaults to os.Exit; Clock to the real clock.
	Exit  func(code int)
	Clock clock.Clock
}

// Validate reports every problem of the config.
func (c Config) Validate() error {
	var errs []error
	if c.Deadline <= 0 {
		errs = append(errs, fmt.Errorf("shutdown deadline %s: want a positive duration (e.g. 30s)", c.Deadline))
	}
	return errors.Join(errs...)
}

// Notify returns a context cancelled by the first signal, and a stop function that releases
// the signals (call it when the process is done draining, e.g. deferred in main).
func Notify(parent context.Context, cfg Config) (context.Context, func(), error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Signals) == 0 {
		cfg.Signals = []os.Signal{os.Interrupt, syscall.SIGTERM}
	}
	if cfg.Exit == nil {
		cfg.Exit = os.Exit
	}
	clk := clock.Or(cfg.Clock)
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, cfg.Signals...)
	done := make(chan struct{})
	go func() {
		var s os.Signal
		select {
		case s = <-sigs:
		case <-done:
			return
		}
		cfg.Logger.Info("shutting down: draining; send the signal again to exit at once",
			"signal", s.String(), "deadline", cfg.Deadline.String())
		cancel()
		t := clk.NewTimer(cfg.Deadline)
		defer t.Stop()
		select {
		case s = <-sigs:
			cfg.Logger.Warn("second signal: exiting at once without finishing the drain", "signal", s.String())
			cfg.Exit(ExitCode)
		case <-t.C():
			cfg.Logger.Error("shutdown deadline passed: exiting without finishing the drain", "deadline", cfg.Deadline.String())
			cfg.Exit(ExitCode)
		case <-done:
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(done)
			cancel()
		})
	}
	return ctx, stop, nil
}
