//go:build windows

package service

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/eventlog"
	"golang.org/x/sys/windows/svc/mgr"
)

// Windows manages the bridge as a Windows service (LocalService account, automatic start,
// restarted on failure), logging to the Event Log under WindowsName.
type Windows struct {
	Out io.Writer
}

func (w Windows) paths() Paths { return DefaultPaths("windows", os.Getenv("ProgramData")) }

// Install copies this executable to %ProgramData%\Outpost\Bridge, writes the configuration
// and secrets there, registers the service and its Event Log source, and starts it.
func (w Windows) Install(c InstallConfig) error {
	p := w.paths()
	c.Paths = p
	if err := WriteFiles(c, p.DataDir, filepath.Join(p.ConfigDir, "ca.pem")); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if !strings.EqualFold(self, p.Bin) {
		b, err := os.ReadFile(self)
		if err != nil {
			return err
		}
		if err := writeFile(p.Bin, b, 0o755); err != nil {
			return err
		}
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(WindowsName); err == nil {
		s.Close()
		return fmt.Errorf("service %s already exists: `outpost-bridge service uninstall` first", WindowsName)
	}
	s, err := m.CreateService(WindowsName, p.Bin, mgr.Config{DisplayName: DisplayName, Description: Description,
		StartType: mgr.StartAutomatic, ServiceStartName: `NT AUTHORITY\LocalService`},
		WindowsArgs(p)...)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetRecoveryActions([]mgr.RecoveryAction{{Type: mgr.ServiceRestart, Delay: 5 * time.Second},
		{Type: mgr.ServiceRestart, Delay: 30 * time.Second}}, 24*60*60)
	if err := eventlog.InstallAsEventCreate(WindowsName, eventlog.Error|eventlog.Warning|eventlog.Info); err != nil &&
		!strings.Contains(err.Error(), "exists") {
		return fmt.Errorf("event log source: %w", err)
	}
	if err := s.Start(); err != nil {
		return err
	}
	fmt.Fprintln(w.Out, "OutpostBridge installed and started; `outpost-bridge service status` shows how it is doing")
	return nil
}

// Uninstall stops and removes the service; configuration and data stay unless purge.
func (w Windows) Uninstall(purge bool) error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(WindowsName)
	if err != nil {
		return fmt.Errorf("service %s is not installed", WindowsName)
	}
	defer s.Close()
	_, _ = s.Control(svc.Stop)
	if err := s.Delete(); err != nil {
		return err
	}
	_ = eventlog.Remove(WindowsName)
	if purge {
		return os.RemoveAll(w.paths().ConfigDir)
	}
	return nil
}

func (w Windows) with(f func(*mgr.Service) error) error {
	m, err := mgr.Connect()
	if err != nil {
		return err
	}
	defer m.Disconnect()
	s, err := m.OpenService(WindowsName)
	if err != nil {
		return fmt.Errorf("service %s is not installed", WindowsName)
	}
	defer s.Close()
	return f(s)
}

func (w Windows) Start() error { return w.with(func(s *mgr.Service) error { return s.Start() }) }
func (w Windows) Stop() error {
	return w.with(func(s *mgr.Service) error { _, err := s.Control(svc.Stop); return err })
}
func (w Windows) Status() error {
	return w.with(func(s *mgr.Service) error {
		st, err := s.Query()
		if err != nil {
			return err
		}
		fmt.Fprintln(w.Out, "service", WindowsName, windowsState(st.State))
		return nil
	})
}

func windowsState(s svc.State) State {
	switch s {
	case svc.Running:
		return Running
	case svc.StartPending:
		return StartPending
	case svc.StopPending:
		return StopPending
	}
	return Stopped
}

// IsService reports whether the Windows service manager started this process.
func IsService() bool {
	ok, err := svc.IsWindowsService()
	return err == nil && ok
}

// RunService runs the bridge under the service manager until it is stopped, and returns
// the exit code.
func RunService(r *Runner) error {
	return svc.Run(WindowsName, &handler{r: r})
}

type handler struct{ r *Runner }

func (h *handler) Execute(_ []string, req <-chan svc.ChangeRequest, st chan<- svc.Status) (bool, uint32) {
	st <- svc.Status{State: svc.StartPending}
	if err := h.r.Start(); err != nil {
		return false, 1
	}
	accepts := svc.AcceptStop | svc.AcceptShutdown
	st <- svc.Status{State: svc.Running, Accepts: accepts}
	for {
		select {
		case c := <-req:
			switch c.Cmd {
			case svc.Interrogate:
				st <- c.CurrentStatus
			case svc.Stop, svc.Shutdown:
				st <- svc.Status{State: svc.StopPending, WaitHint: 60_000}
				h.r.Stop()
				return false, h.r.ExitCode()
			}
		case <-h.r.Done():
			// The bridge ended by itself: a drain (0) or a failure (1, the manager restarts it).
			return false, h.r.ExitCode()
		}
	}
}

// EventLog is an io.Writer for the bridge's log lines: each goes to the Event Log at the
// level its text names.
type EventLog struct{ l *eventlog.Log }

// OpenEventLog opens the service's Event Log source.
func OpenEventLog() (*EventLog, error) {
	l, err := eventlog.Open(WindowsName)
	if err != nil {
		return nil, err
	}
	return &EventLog{l: l}, nil
}

func (e *EventLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	var err error
	switch LogLevel(line) {
	case "ERROR":
		err = e.l.Error(1, line)
	case "WARN":
		err = e.l.Warning(2, line)
	default:
		err = e.l.Info(3, line)
	}
	return len(p), err
}
