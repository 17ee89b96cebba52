-- Transactional outbox: the change events and ingest receipts a transaction announces are
-- written in it, and a drainer publishes them and deletes the row once the stream
-- acknowledged every message. A crash between commit and publish loses nothing: the row
-- waits here. msgs is a JSON array of the transaction's messages ({"s": subject, "i":
-- message id, "h": headers, "d": body}): one row per transaction, not per message, keeps
-- the outbox off the ingest's critical path.
CREATE TABLE outbox (
    seq     {{.AutoID}},
    msgs    TEXT NOT NULL,
    created BIGINT NOT NULL
);

-- The receipt an ingest produced, by payload id, so that a payload delivered again after
-- its ingest committed gets its true receipt (what it created) rather than "unchanged".
-- Pruned by age (PruneReceipts).
-- No index on created: pruning scans the table once an hour, ingest inserts constantly.
CREATE TABLE receipts (
    payload TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    created BIGINT NOT NULL
){{.WithoutRowID}};
