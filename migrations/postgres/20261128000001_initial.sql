-- The state database in PostgreSQL: the same tables, columns and indexes as
-- migrations/sqlite (all of its migrations, folded into one, since no PostgreSQL
-- database predates them), in PostgreSQL's types. Times are unix milliseconds (BIGINT);
-- every integer is BIGINT so that both backends read them as i64.

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
    seen_at         BIGINT NOT NULL
);

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY NOT NULL,
    agent_id        TEXT,
    status          TEXT,
    message_count   BIGINT NOT NULL,
    updated_at      TEXT,
    last_checked_at BIGINT NOT NULL,
    raw             TEXT
);
CREATE INDEX conversations_refresh ON conversations (status, last_checked_at);

CREATE TABLE meetings (
    sha256       TEXT PRIMARY KEY NOT NULL,
    file_name    TEXT NOT NULL,
    source_path  TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    title        TEXT NOT NULL,
    size         BIGINT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('uploading', 'done', 'failed')),
    attempts     BIGINT NOT NULL DEFAULT 0,
    meeting_id   TEXT,
    raw          TEXT,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    transcript   TEXT,
    summary      TEXT,
    duration_sec DOUBLE PRECISION,
    uploaded_as  TEXT,
    moved_to     TEXT
);

CREATE TABLE events (
    id         TEXT PRIMARY KEY NOT NULL,
    type       TEXT NOT NULL,
    agent_id   TEXT,
    created_at BIGINT NOT NULL,
    envelope   TEXT NOT NULL
);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (id),
    connector       TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    checkpoint      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (event_id, connector)
);
CREATE INDEX deliveries_due ON deliveries (connector, status, next_attempt_at);
CREATE INDEX deliveries_status ON deliveries (status);
CREATE INDEX deliveries_leased ON deliveries (connector, lease_until) WHERE lease_until IS NOT NULL;

CREATE TABLE attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id BIGINT NOT NULL REFERENCES deliveries (id),
    attempt     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    status_code BIGINT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    response    TEXT
);
CREATE INDEX attempts_delivery ON attempts (delivery_id);

CREATE TABLE source_runs (
    source           TEXT PRIMARY KEY NOT NULL,
    last_started_at  BIGINT NOT NULL,
    last_finished_at BIGINT,
    last_outcome     TEXT,
    last_error       TEXT,
    last_success_at  BIGINT,
    runs             BIGINT NOT NULL DEFAULT 0
);
