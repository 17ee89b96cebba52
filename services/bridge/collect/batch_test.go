package collect

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"

	api "github.com/outpost-dev/outpost/libs/api/correlation"
	"github.com/outpost-dev/outpost/libs/envelope"
)

// syslogLine is line seq of sender conn, RFC 5424.
func syslogLine(conn, seq int) string {
	return fmt.Sprintf("<11>1 2026-03-02T09:00:00Z host-%d app - - - c%d-seq-%05d", conn, conn, seq)
}

// settled waits until the collector has taken n syslog events — stored or waiting in a
// batch — and r rejects, and nothing is being stored.
func settled(t *testing.T, c *Collectors, sink *memSink, n, r int) Counts {
	t.Helper()
	var got Counts
	eventually(t, 60*time.Second, func() error {
		got = c.Counts()[api.SourceSyslog]
		evs, rej := sink.snapshot()
		if got.Accepted+got.Pending != int64(n) || len(rej) != r || int64(len(evs)) != got.Accepted {
			return fmt.Errorf("counts %+v, %d events and %d rejects in the sink; want %d events taken, %d rejects (rejects: %q)",
				got, len(evs), len(rej), n, r, rej)
		}
		return nil
	})
	return got
}

// A burst of syslog lines becomes ceil(N/500) stored messages: full batches at once, the
// rest when its linger ends (the clock is fake: it ends only when the test moves it). Each
// event is stored once, in the order its sender sent it; a malformed line is still its own
// reject, and the stream goes on.
func TestSyslogBurstBatches(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	tests := []struct {
		name       string
		transport  string // tcp, tls
		octet      bool   // RFC 6587 octet counting, else one line per message
		conns, per int
		badEvery   int // every badEvery-th line of a sender is malformed (0: none)
	}{
		{"one line", "tcp", false, 1, 1, 0},
		{"exactly one batch", "tcp", false, 1, 500, 0},
		{"1200 lines", "tcp", false, 1, 1200, 0},
		{"octet counting", "tcp", true, 1, 1001, 0},
		{"three senders at once", "tcp", false, 3, 700, 0},
		{"malformed lines among good ones", "tcp", false, 2, 600, 97},
		{"tls", "tls", true, 2, 800, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sink, clk := startFake(t, Config{Syslog: "127.0.0.1:0", SyslogTLSCert: certFile, SyslogTLSKey: keyFile, SyslogTLS: "127.0.0.1:0"})
			good, bad := 0, 0
			var wg sync.WaitGroup
			errs := make(chan error, tt.conns)
			for k := range tt.conns {
				var b strings.Builder
				for i := range tt.per {
					line := syslogLine(k, i)
					if tt.badEvery > 0 && i%tt.badEvery == tt.badEvery-1 {
						line, bad = "\x00\xff<<<not syslog "+line, bad+1
					} else {
						good++
					}
					if tt.octet {
						fmt.Fprintf(&b, "%d %s", len(line), line)
					} else {
						b.WriteString(line + "\n")
					}
				}
				wg.Go(func() {
					var conn net.Conn
					var err error
					if tt.transport == "tls" {
						conn, err = tls.Dial("tcp", c.Addrs["syslog/tls"].String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
					} else {
						conn, err = net.Dial("tcp", c.Addrs["syslog/tcp"].String())
					}
					if err == nil {
						_, err = conn.Write([]byte(b.String()))
						conn.Close()
					}
					errs <- err
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			got := settled(t, c, sink, good, bad)
			if got.Batches != int64(good/500) || got.Pending != int64(good%500) {
				t.Fatalf("before the linger ends: counts %+v; want %d full batches stored and %d events waiting", got, good/500, good%500)
			}
			clk.Advance(DefaultBatchConfig().Linger)
			want := (good + 499) / 500
			eventually(t, 30*time.Second, func() error {
				if got := c.Counts()[api.SourceSyslog]; got.Batches != int64(want) || got.Pending != 0 || got.Accepted != int64(good) {
					return fmt.Errorf("after the linger: counts %+v; want %d batches holding %d events", got, want, good)
				}
				return nil
			})
			evs, _ := sink.snapshot()
			sink.mu.Lock()
			for i, n := range sink.batches {
				if n > 500 || (i < len(sink.batches)-1 && n != 500) {
					t.Errorf("batch %d holds %d events; want 500 each but the last (batches %v)", i, n, sink.batches)
				}
			}
			sink.mu.Unlock()
			checkOrder(t, evs, tt.conns)
			if got := c.Counts()[api.SourceSyslog]; tt.per > 0 && got.MaxBatch != int64(min(good, 500)) {
				t.Errorf("max batch %d, want %d", got.MaxBatch, min(good, 500))
			}
		})
	}
}

// checkOrder: every event once, and each sender's in the order it sent them.
func checkOrder(t *testing.T, evs []*envelope.Event, conns int) {
	t.Helper()
	seen := map[string]bool{}
	last := make([]int, conns)
	for i := range last {
		last[i] = -1
	}
	for _, ev := range evs {
		if seen[ev.Message] {
			t.Errorf("event %q stored twice", ev.Message)
		}
		seen[ev.Message] = true
		var k, seq int
		if _, err := fmt.Sscanf(ev.Message, "c%d-seq-%d", &k, &seq); err != nil || k >= conns {
			t.Fatalf("event %q: not one the test sent (%v)", ev.Message, err)
		}
		if seq <= last[k] {
			t.Errorf("sender %d: line %d stored after line %d", k, seq, last[k])
		}
		last[k] = seq
	}
}

// A batch waiting for its linger is stored by Close (the bridge's shutdown) — nothing is
// left in memory.
func TestCloseStoresPendingBatch(t *testing.T) {
	c, sink, _ := startFake(t, Config{Syslog: "127.0.0.1:0"})
	conn, err := net.Dial("tcp", c.Addrs["syslog/tcp"].String())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		fmt.Fprintf(conn, "%s\n", syslogLine(0, i))
	}
	conn.Close()
	if got := settled(t, c, sink, 10, 0); got.Pending != 10 || got.Batches != 0 {
		t.Fatalf("counts %+v: want 10 events waiting for the linger", got)
	}
	c.Close()
	evs, _ := sink.snapshot()
	if len(evs) != 10 || len(sink.batches) != 1 {
		t.Fatalf("after Close: %d events in %v batches, want 10 in one", len(evs), sink.batches)
	}
	checkOrder(t, evs, 1)
	if got := c.Counts()[api.SourceSyslog]; got.Pending != 0 || got.Accepted != 10 {
		t.Errorf("counts after Close %+v", got)
	}
}

// Each limit flushes a batch: the event count, the bytes, and a linger of the configured
// length (not the default one).
func TestBatchLimits(t *testing.T) {
	tests := []struct {
		name     string
		batch    BatchConfig
		lines    int
		advance  time.Duration // after the burst
		batches  int           // stored once settled, before advancing
		after    int           // stored after advancing
		maxBatch int
	}{
		{"max events", BatchConfig{MaxEvents: 7}, 20, 0, 2, 2, 7},
		{"linger not yet over", BatchConfig{Linger: time.Second}, 3, 999 * time.Millisecond, 0, 0, 0},
		{"linger over", BatchConfig{Linger: time.Second}, 3, time.Second, 0, 1, 3},
		{"one event a message", BatchConfig{MaxEvents: 1}, 4, 0, 4, 4, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, sink, clk := startFake(t, Config{Syslog: "127.0.0.1:0", Batch: tt.batch, MaxMessage: 8 << 10})
			conn, err := net.Dial("tcp", c.Addrs["syslog/tcp"].String())
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.lines {
				fmt.Fprintf(conn, "%s\n", syslogLine(0, i))
			}
			conn.Close()
			if got := settled(t, c, sink, tt.lines, 0); got.Batches != int64(tt.batches) {
				t.Fatalf("counts %+v: want %d batches stored before the linger ends", got, tt.batches)
			}
			clk.Advance(tt.advance)
			eventually(t, 30*time.Second, func() error {
				if got := c.Counts()[api.SourceSyslog]; got.Batches != int64(tt.after) || got.MaxBatch != int64(tt.maxBatch) {
					return fmt.Errorf("after %s: counts %+v, want %d batches, the largest of %d", tt.advance, got, tt.after, tt.maxBatch)
				}
				return nil
			})
		})
	}
}

// A batch holds at most MaxBytes (as estimated; the bridge's sink checks the encoded size):
// large lines make batches of a few events, each stored once the next would not fit.
func TestBatchMaxBytes(t *testing.T) {
	const maxBytes = 16 << 10
	c, sink, clk := startFake(t, Config{Syslog: "127.0.0.1:0", Batch: BatchConfig{MaxBytes: maxBytes}, MaxMessage: 8 << 10})
	conn, err := net.Dial("tcp", c.Addrs["syslog/tcp"].String())
	if err != nil {
		t.Fatal(err)
	}
	const lines = 20
	for i := range lines {
		fmt.Fprintf(conn, "%s %s\n", syslogLine(0, i), strings.Repeat("x", 3000))
	}
	conn.Close()
	if got := settled(t, c, sink, lines, 0); got.Batches == 0 {
		t.Fatalf("counts %+v: want batches stored by size before the linger ends", got)
	}
	clk.Advance(DefaultBatchConfig().Linger)
	eventually(t, 30*time.Second, func() error {
		if got := c.Counts()[api.SourceSyslog]; got.Accepted != lines || got.Pending != 0 {
			return fmt.Errorf("counts %+v: want %d stored", got, lines)
		}
		return nil
	})
	evs, _ := sink.snapshot()
	sink.mu.Lock()
	defer sink.mu.Unlock()
	at := 0
	for i, n := range sink.batches {
		size := 0
		for _, ev := range evs[at : at+n] {
			size += eventSize(ev)
		}
		at += n
		if size > maxBytes || n < 2 {
			t.Errorf("batch %d: %d events of %d bytes; want several, at most %d bytes (batches %v)", i, n, size, maxBytes, sink.batches)
		}
	}
}

// An inform is acknowledged only once stored: with a clock that never ends a linger, the
// sender still gets its answer, and the event is in the sink by then; a trap waits for
// its batch.
func TestInformStoredBeforeAck(t *testing.T) {
	c, sink, _ := startFake(t, Config{Traps: "127.0.0.1:0"})
	addr := c.Addrs["trap"].(*net.UDPAddr)
	g := &gosnmp.GoSNMP{Target: "127.0.0.1", Port: uint16(addr.Port), Community: "public", Version: gosnmp.Version2c,
		Timeout: 10 * time.Second, Retries: 2, MaxOids: gosnmp.MaxOids}
	if err := g.Connect(); err != nil {
		t.Fatal(err)
	}
	defer g.Conn.Close()
	linkDown := []gosnmp.SnmpPDU{{Name: ".1.3.6.1.6.3.1.1.4.1.0", Type: gosnmp.ObjectIdentifier, Value: ".1.3.6.1.6.3.1.1.5.3"}}
	if _, err := g.SendTrap(gosnmp.SnmpTrap{Variables: linkDown}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() error {
		if got := c.Counts()[api.SourceTrap]; got.Pending != 1 {
			return fmt.Errorf("counts %+v: want the trap waiting in its batch", got)
		}
		return nil
	})
	if _, err := g.SendTrap(gosnmp.SnmpTrap{Variables: linkDown, IsInform: true}); err != nil {
		t.Fatalf("inform not acknowledged: %v", err)
	}
	evs, _ := sink.snapshot()
	if len(evs) != 2 || len(sink.batches) != 1 {
		t.Fatalf("when the inform was acknowledged: %d events in batches %v; want the trap and the inform stored together", len(evs), sink.batches)
	}
}

func TestBatchConfigValidate(t *testing.T) {
	tests := []struct {
		batch BatchConfig
		want  []string // each named in the error; none: valid
	}{
		{BatchConfig{}, nil},
		{DefaultBatchConfig(), nil},
		{BatchConfig{MaxEvents: 1, MaxBytes: MinBatchBytes, Linger: time.Millisecond}, nil},
		{BatchConfig{MaxEvents: envelope.MaxEventBatch + 1}, []string{"max_events 1001"}},
		{BatchConfig{MaxEvents: -1, MaxBytes: 2 << 20, Linger: -time.Second}, []string{"max_events -1", "max_bytes 2097152", "linger -1s"}},
		{BatchConfig{Linger: 5 * time.Second}, []string{"linger 5s"}},
	}
	for _, tt := range tests {
		err := Config{Syslog: "127.0.0.1:514", Batch: tt.batch}.Validate()
		if len(tt.want) == 0 && err != nil {
			t.Errorf("%+v: %v, want valid", tt.batch, err)
		}
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: %v, want it to name %q", tt.batch, err, w)
			}
		}
	}
}
