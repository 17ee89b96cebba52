package service

import (
	"context"
	"errors"
	"sync"
	"time"
)

// State of a service, as service managers know it.
type State int

const (
	Stopped State = iota
	StartPending
	Running
	StopPending
)

func (s State) String() string {
	return [...]string{"stopped", "start_pending", "running", "stop_pending"}[s]
}

// Runner runs the bridge under a service manager: Start launches it, Stop asks it to stop
// (its context ends: it drains) and waits at most StopTimeout; the bridge may also end by
// itself (a drain, a failure), which Done reports. It is the part of the Windows service
// handler that does not need Windows.
type Runner struct {
	Run         func(ctx context.Context) error
	StopTimeout time.Duration

	mu     sync.Mutex
	state  State
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// ErrNotStopped is returned by Start on a runner that is not stopped.
var ErrNotStopped = errors.New("service is already running")

// Start launches the bridge.
func (r *Runner) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state != Stopped {
		return ErrNotStopped
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.state, r.cancel, r.done, r.err = Running, cancel, make(chan struct{}), nil
	done := r.done
	go func() {
		err := r.Run(ctx)
		r.mu.Lock()
		r.state, r.err = Stopped, err
		r.mu.Unlock()
		cancel()
		close(done)
	}()
	return nil
}

// Stop asks the bridge to stop and waits for it, at most StopTimeout (0: 60 s). It
// returns false when the bridge did not stop in time (the service manager then kills the
// process).
func (r *Runner) Stop() bool {
	r.mu.Lock()
	if r.state != Running {
		done := r.done
		r.mu.Unlock()
		if done != nil {
			<-done
		}
		return true
	}
	r.state = StopPending
	cancel, done := r.cancel, r.done
	r.mu.Unlock()
	cancel()
	d := r.StopTimeout
	if d <= 0 {
		d = 60 * time.Second
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// State is the runner's state now.
func (r *Runner) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Done is closed when the bridge has returned (nil before the first Start).
func (r *Runner) Done() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

// ExitCode is the service's exit code for the bridge's result: 0 for a clean stop (a
// cancelled context is one), 1 otherwise.
func (r *Runner) ExitCode() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil || errors.Is(r.err, context.Canceled) {
		return 0
	}
	return 1
}

// Err is what the bridge returned.
func (r *Runner) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}
