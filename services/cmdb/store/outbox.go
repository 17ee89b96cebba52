package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// An outbox row holds its messages as netstrings ("<length>:<bytes>,"): subject, message
// id, the number of header values, each as key then value, and the body. Decoding it is a
// few slices, where JSON cost as much as the ingest's own writes; it stays text (subjects,
// headers and JSON bodies hold no NUL), so one TEXT column serves both databases.

func encodeOutbox(msgs []OutboxMsg) string {
	var b strings.Builder
	// One allocation for the whole row: a batch's row holds thousands of messages, and
	// growing it by doublings copied it several times over.
	size := 0
	for _, m := range msgs {
		size += len(m.Subject) + len(m.MsgID) + len(m.Data) + 4*8
		for k, vs := range m.Header {
			for _, v := range vs {
				size += len(k) + len(v) + 2*8
			}
		}
	}
	b.Grow(size)
	put := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
		b.WriteByte(',')
	}
	for _, m := range msgs {
		put(m.Subject)
		put(m.MsgID)
		n := 0
		for _, vs := range m.Header {
			n += len(vs)
		}
		put(strconv.Itoa(n))
		keys := make([]string, 0, len(m.Header))
		for k := range m.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range m.Header[k] {
				put(k)
				put(v)
			}
		}
		b.WriteString(strconv.Itoa(len(m.Data))) // put, without copying Data to a string
		b.WriteByte(':')
		b.Write(m.Data)
		b.WriteByte(',')
	}
	return b.String()
}

func decodeOutbox(seq int64, raw string) ([]OutboxMsg, error) {
	bad := fmt.Errorf("store: outbox row %d is malformed", seq)
	next := func() (string, bool) {
		i := strings.IndexByte(raw, ':')
		if i <= 0 {
			return "", false
		}
		n, err := strconv.Atoi(raw[:i])
		if err != nil || n < 0 || len(raw) < i+1+n+1 || raw[i+1+n] != ',' {
			return "", false
		}
		s := raw[i+1 : i+1+n]
		raw = raw[i+1+n+1:]
		return s, true
	}
	// The messages' bodies are slices of one copy of the row, not a copy each.
	orig, buf := raw, []byte(raw)
	var out []OutboxMsg
	for raw != "" {
		var m OutboxMsg
		var ok bool
		var count string
		if m.Subject, ok = next(); !ok {
			return nil, bad
		}
		if m.MsgID, ok = next(); !ok {
			return nil, bad
		}
		if count, ok = next(); !ok {
			return nil, bad
		}
		n, err := strconv.Atoi(count)
		if err != nil || n < 0 {
			return nil, bad
		}
		m.Header = make(map[string][]string, n)
		// One backing array for the message's header values instead of one per header (a
		// change event has half a dozen); capped slices, so a second value of a header is
		// appended to a copy and never overwrites its neighbour's.
		vals := make([]string, n)
		for i := range n {
			k, ok1 := next()
			v, ok2 := next()
			if !ok1 || !ok2 {
				return nil, bad
			}
			if prev, ok := m.Header[k]; ok {
				m.Header[k] = append(prev, v)
				continue
			}
			vals[i] = v
			m.Header[k] = vals[i : i+1 : i+1]
		}
		data, ok := next()
		if !ok {
			return nil, bad
		}
		end := len(orig) - len(raw) - 1 // data is followed by ','
		m.Seq, m.Data = seq, buf[end-len(data):end:end]
		out = append(out, m)
	}
	return out, nil
}

func (s *sqlStore) PendingOutbox(ctx context.Context, limit int) ([]OutboxMsg, error) {
	if limit <= 0 {
		limit = 16
	}
	rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT seq, msgs FROM outbox ORDER BY seq LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxMsg
	for rows.Next() {
		var seq int64
		var raw string
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, fmt.Errorf("store: outbox: %w", err)
		}
		msgs, err := decodeOutbox(seq, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	return out, nil
}

func (s *sqlStore) DeleteOutbox(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	// Not counted in s.writes: the engine never reads the outbox, so a chain of ingest
	// transactions need not start over when the drainer deletes between two of them.
	return s.retry(ctx, func() error { return s.updateOnce(ctx, deleteOutbox(s, seqs), false) })
}

func deleteOutbox(s *sqlStore, seqs []int64) func(context.Context, Tx) error {
	return func(ctx context.Context, x Tx) error {
		t := x.(*tx).t
		for i := 0; i < len(seqs); i += inChunk {
			part := seqs[i:min(len(seqs), i+inChunk)]
			args := make([]any, len(part))
			for j, v := range part {
				args[j] = v
			}
			ph, args := placeholders(args)
			if _, err := t.ExecContext(ctx, s.d.q(`DELETE FROM outbox WHERE seq IN (`+ph+`)`), args...); err != nil {
				return fmt.Errorf("store: outbox delete: %w", err)
			}
		}
		return nil
	}
}

func (s *sqlStore) PruneReceipts(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.Update(ctx, func(ctx context.Context, x Tx) error {
		res, err := x.(*tx).t.ExecContext(ctx, s.d.q(`DELETE FROM receipts WHERE created < ?`), nanos(before))
		if err != nil {
			return fmt.Errorf("store: prune receipts: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}
