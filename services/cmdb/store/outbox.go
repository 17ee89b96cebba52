package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// outboxWire is one message in an outbox row.
type outboxWire struct {
	Subject string              `json:"s"`
	MsgID   string              `json:"i"`
	Header  map[string][]string `json:"h"`
	Data    json.RawMessage     `json:"d"`
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
		var wire []outboxWire
		if err := json.Unmarshal([]byte(raw), &wire); err != nil {
			return nil, fmt.Errorf("store: outbox row %d: %w", seq, err)
		}
		for _, w := range wire {
			out = append(out, OutboxMsg{Seq: seq, Subject: w.Subject, MsgID: w.MsgID, Header: w.Header, Data: w.Data})
		}
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
	return s.Update(ctx, func(ctx context.Context, x Tx) error {
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
	})
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
