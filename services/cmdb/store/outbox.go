package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

func (s *sqlStore) PendingOutbox(ctx context.Context, limit int) ([]OutboxMsg, error) {
	if limit <= 0 {
		limit = 256
	}
	rows, err := s.r.QueryContext(ctx, s.d.q(`SELECT seq, subject, msg_id, header, data, created FROM outbox ORDER BY seq LIMIT ?`), limit)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxMsg
	for rows.Next() {
		var m OutboxMsg
		var h, data string
		var created int64
		if err := rows.Scan(&m.Seq, &m.Subject, &m.MsgID, &h, &data, &created); err != nil {
			return nil, fmt.Errorf("store: outbox: %w", err)
		}
		if err := json.Unmarshal([]byte(h), &m.Header); err != nil {
			return nil, fmt.Errorf("store: outbox message %d: headers: %w", m.Seq, err)
		}
		m.Data, m.Created = []byte(data), fromNanos(created)
		out = append(out, m)
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
