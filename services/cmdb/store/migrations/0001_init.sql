-- One schema for SQLite and PostgreSQL. The few differences are template fields:
--   {{.CollateC}}     byte-order collation for columns searched by prefix ranges (PostgreSQL
--                     locales would otherwise order "web-1" next to "web1" and break ranges)
--   {{.WithoutRowID}} clustered primary keys on SQLite (PostgreSQL has no rowid to drop)
-- Times are Unix nanoseconds in BIGINT columns: one representation on both databases and
-- exact round trips of the observed times that reconciliation compares.

-- attributes holds the current value of every attribute (JSON object) and sources who set
-- each one and when ([[source, observed, attr…]…]), which reconciliation reads to apply
-- precedence. One row per CI keeps ingest to a handful of row writes per CI.
CREATE TABLE cis (
    id                 TEXT PRIMARY KEY,
    class              TEXT NOT NULL,
    name               TEXT NOT NULL DEFAULT '',
    attributes         TEXT NOT NULL DEFAULT '{}',
    sources            TEXT NOT NULL DEFAULT '[]',
    created            BIGINT NOT NULL,
    updated            BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    stale              BOOLEAN NOT NULL DEFAULT FALSE,
    operational_status TEXT NOT NULL DEFAULT 'operational'
){{.WithoutRowID}};
-- No index on last_seen: MarkStale scans now and then, ingest would update it constantly.
CREATE INDEX cis_class_id ON cis (class, id);

-- The lower-cased text of every short scalar attribute, for filters (attr = value) and
-- text search (prefix ranges). The key alone serves both, and the engine knows the old
-- value it replaces, so no second index is needed.
CREATE TABLE ci_index (
    attr  TEXT NOT NULL,
    norm  TEXT {{.CollateC}} NOT NULL,
    ci_id TEXT NOT NULL,
    PRIMARY KEY (attr, norm, ci_id)
){{.WithoutRowID}};

-- Identifiers are unique within a family: the database, not the process, guarantees that
-- concurrent ingests of one new device create one CI. A row with a NULL ci_id is a value
-- found shared by several devices: it identifies nothing any more.
CREATE TABLE ci_identifiers (
    family TEXT NOT NULL,
    kind   TEXT NOT NULL,
    value  TEXT {{.CollateC}} NOT NULL,
    ci_id  TEXT REFERENCES cis (id) ON DELETE CASCADE,
    -- value first: the same key serves exact lookups and prefix search (serials, MACs).
    PRIMARY KEY (value, family, kind)
){{.WithoutRowID}};
CREATE INDEX ci_identifiers_ci ON ci_identifiers (ci_id);

-- A relation is its (from, type, to) triple; id is a stable handle for APIs and events.
CREATE TABLE relations (
    from_ci   TEXT NOT NULL REFERENCES cis (id) ON DELETE CASCADE,
    type      TEXT NOT NULL,
    to_ci     TEXT NOT NULL REFERENCES cis (id) ON DELETE CASCADE,
    id        TEXT NOT NULL,
    source    TEXT NOT NULL,
    created   BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (from_ci, type, to_ci)
){{.WithoutRowID}};
CREATE INDEX relations_to ON relations (to_ci);

-- History is read per CI, newest first: clustering it by (ci_id, id) serves that without a
-- second index. ids are ULIDs, so they sort by creation.
CREATE TABLE history (
    ci_id  TEXT NOT NULL REFERENCES cis (id) ON DELETE CASCADE,
    id     TEXT NOT NULL,
    attr   TEXT NOT NULL,
    old    TEXT,
    new    TEXT,
    source TEXT NOT NULL,
    time   BIGINT NOT NULL,
    PRIMARY KEY (ci_id, id)
){{.WithoutRowID}};

-- Items that identification refused to merge or could not identify. Recording is
-- idempotent (dedup_key): the same payload again only moves last_seen.
CREATE TABLE conflicts (
    id         TEXT PRIMARY KEY,
    dedup_key  TEXT NOT NULL UNIQUE,
    source     TEXT NOT NULL,
    native_key TEXT NOT NULL,
    class      TEXT NOT NULL,
    ref        TEXT NOT NULL,
    item       TEXT NOT NULL,
    candidates TEXT NOT NULL,
    reason     TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    count      BIGINT NOT NULL
);
