package bridge

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
)

// logRing keeps the last lines the bridge logged, for `outpost agents logs NAME`: an operator
// sees what a site's bridge says without a shell on its host.
type logRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newLogRing(n int) *logRing { return &logRing{lines: make([]string, n)} }

func (r *logRing) add(line string) {
	r.mu.Lock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// last returns up to n lines, oldest first.
func (r *logRing) last(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	if n > 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	return all
}

// ringHandler tees records into the ring (as text) and on to the next handler.
type ringHandler struct {
	next slog.Handler
	ring *logRing
	text slog.Handler
	buf  *bytes.Buffer
	mu   *sync.Mutex
}

func newRingHandler(next slog.Handler, ring *logRing) *ringHandler {
	buf := &bytes.Buffer{}
	return &ringHandler{next: next, ring: ring, buf: buf, mu: &sync.Mutex{},
		text: slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo})}
}

func (h *ringHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *ringHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelInfo {
		h.mu.Lock()
		h.buf.Reset()
		_ = h.text.Handle(ctx, r)
		h.ring.add(string(bytes.TrimRight(h.buf.Bytes(), "\n")))
		h.mu.Unlock()
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *ringHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &ringHandler{next: h.next.WithAttrs(as), ring: h.ring, text: h.text.WithAttrs(as), buf: h.buf, mu: h.mu}
}

func (h *ringHandler) WithGroup(g string) slog.Handler {
	return &ringHandler{next: h.next.WithGroup(g), ring: h.ring, text: h.text.WithGroup(g), buf: h.buf, mu: h.mu}
}
