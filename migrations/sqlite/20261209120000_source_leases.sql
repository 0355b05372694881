-- Several instances sharing one database: who is alive (`instances`, a heartbeat) and
-- which one polls each source (`source_leases`). A lease row is held by one process
-- (`token`: an instance's name may be reused by its next start) until `expires_at`, unix
-- milliseconds by the database's clock, so hosts' clocks never decide. On SQLite one
-- instance holds every lease without writing here; the tables keep the schemas alike.

CREATE TABLE instances (
    name              TEXT PRIMARY KEY NOT NULL,
    host              TEXT NOT NULL,
    token             TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
);

CREATE TABLE source_leases (
    source      TEXT PRIMARY KEY NOT NULL,
    instance    TEXT NOT NULL,
    token       TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
