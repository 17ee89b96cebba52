// Package telemetry sets up what every Outpost process reports about itself: structured logs
// (log/slog), OpenTelemetry traces and metrics, and trace context carried in NATS headers.
package telemetry

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// LogConfig chooses the level and format of a process's log.
type LogConfig struct {
	Level  string // debug | info | warn | error (env OUTPOST_LOG_LEVEL)
	Format string // auto | text | json (env OUTPOST_LOG_FORMAT); auto = text on a terminal
}

// LogConfigFromEnv reads OUTPOST_LOG_LEVEL and OUTPOST_LOG_FORMAT.
func LogConfigFromEnv() LogConfig {
	return LogConfig{Level: os.Getenv("OUTPOST_LOG_LEVEL"), Format: os.Getenv("OUTPOST_LOG_FORMAT")}
}

// ParseLevel reads a level name; empty means info.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger builds the process logger: text for people at a terminal, JSON for machines.
func NewLogger(w io.Writer, cfg LogConfig) (*slog.Logger, error) {
	level, err := ParseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	switch cfg.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "", "auto":
		if isTerminal(w) {
			return slog.New(slog.NewTextHandler(w, opts)), nil
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want auto, text or json", cfg.Format)
	}
}

// isTerminal reports whether w is a character device (a TTY), without a terminal library.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Secret is a string that never shows in logs or formatted output.
type Secret string

func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }
func (Secret) String() string       { return "[redacted]" }
func (Secret) GoString() string     { return "[redacted]" }

// Reveal returns the secret value, for the one place that must use it.
func (s Secret) Reveal() string { return string(s) }
