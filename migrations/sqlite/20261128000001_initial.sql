-- The state database: what has been seen (briefs, conversations, meetings), the events
-- made from it, and the outbox of deliveries. Times are unix milliseconds.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE briefs (
    id              TEXT PRIMARY KEY NOT NULL,
    agent_id        TEXT,
    conversation_id TEXT,
    created_at      TEXT,
    raw             TEXT NOT NULL,
    seen_at         INTEGER NOT NULL
);

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY NOT NULL,
    agent_id        TEXT,
    status          TEXT,
    message_count   INTEGER NOT NULL,
    updated_at      TEXT,
    last_checked_at INTEGER NOT NULL,
    raw             TEXT
);
CREATE INDEX conversations_refresh ON conversations (status, last_checked_at);

CREATE TABLE meetings (
    sha256      TEXT PRIMARY KEY NOT NULL,
    file_name   TEXT NOT NULL,
    source_path TEXT NOT NULL,
    agent_id    TEXT NOT NULL,
    title       TEXT NOT NULL,
    size        INTEGER NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('uploading', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    meeting_id  TEXT,
    raw         TEXT,
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE events (
    id         TEXT PRIMARY KEY NOT NULL,
    type       TEXT NOT NULL,
    agent_id   TEXT,
    created_at INTEGER NOT NULL,
    envelope   TEXT NOT NULL
);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL REFERENCES events (id),
    connector       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    checkpoint      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (event_id, connector)
);
CREATE INDEX deliveries_due ON deliveries (connector, status, next_attempt_at);
CREATE INDEX deliveries_status ON deliveries (status);

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    status_code INTEGER,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    response    TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE source_runs (
    source          TEXT PRIMARY KEY NOT NULL,
    last_started_at INTEGER NOT NULL,
    last_finished_at INTEGER,
    last_outcome    TEXT,
    last_error      TEXT,
    last_success_at INTEGER,
    runs            INTEGER NOT NULL DEFAULT 0
);
