-- Transactional outbox: the change events and ingest receipts an ingest announces are
-- written in its transaction, and a drainer publishes them and deletes them once the stream
-- acknowledged them. A crash between commit and publish loses nothing: the rows wait here.
-- header is the message's NATS headers (JSON object of string lists), data its body.
CREATE TABLE outbox (
    seq     {{.AutoID}},
    subject TEXT NOT NULL,
    msg_id  TEXT NOT NULL,
    header  TEXT NOT NULL,
    data    TEXT NOT NULL,
    created BIGINT NOT NULL
);

-- The receipt an ingest produced, by payload id, so that a payload delivered again after
-- its ingest committed gets its true receipt (what it created) rather than "unchanged".
-- Pruned by age (PruneReceipts).
CREATE TABLE receipts (
    payload TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    created BIGINT NOT NULL
){{.WithoutRowID}};
CREATE INDEX receipts_created ON receipts (created);
