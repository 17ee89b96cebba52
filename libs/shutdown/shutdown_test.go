package shutdown_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/outpost-dev/outpost/libs/clock"
	"github.com/outpost-dev/outpost/libs/shutdown"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// Each case sends SIGUSR1 (so the test process's own SIGINT/SIGTERM are untouched) and
// drives the clock; the process "exits" into a channel.
func TestSecondSignalAndDeadline(t *testing.T) {
	cases := []struct {
		name     string
		then     func(fake *clock.Fake)
		wantLine string
	}{
		{"second signal", func(*clock.Fake) { _ = syscall.Kill(os.Getpid(), syscall.SIGUSR1) }, "second signal: exiting at once"},
		{"deadline", func(fake *clock.Fake) { fake.Advance(30 * time.Second) }, "shutdown deadline passed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			fake := clock.NewFake(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))
			logs := &logBuf{}
			exited := make(chan int, 1)
			sctx, stop, err := shutdown.Notify(ctx, shutdown.Config{Deadline: 30 * time.Second, Logger: slog.New(slog.NewTextHandler(logs, nil)),
				Signals: []os.Signal{syscall.SIGUSR1}, Exit: func(code int) { exited <- code }, Clock: fake})
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			_ = syscall.Kill(os.Getpid(), syscall.SIGUSR1)
			select {
			case <-sctx.Done():
			case <-ctx.Done():
				t.Fatal("the first signal did not cancel the context")
			}
			if !fake.BlockUntil(ctx, 1) {
				t.Fatal("no deadline timer after the first signal")
			}
			select {
			case code := <-exited:
				t.Fatalf("exited %d on the first signal", code)
			default:
			}
			c.then(fake)
			select {
			case code := <-exited:
				if code != shutdown.ExitCode {
					t.Errorf("exit code %d", code)
				}
			case <-ctx.Done():
				t.Fatal("did not exit")
			}
			if out := logs.String(); !strings.Contains(out, "shutting down: draining") || !strings.Contains(out, c.wantLine) {
				t.Errorf("log:\n%s", out)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if _, _, err := shutdown.Notify(context.Background(), shutdown.Config{}); err == nil || !strings.Contains(err.Error(), "positive") {
		t.Fatalf("no deadline: %v", err)
	}
}
