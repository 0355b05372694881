-- Which instance claimed a recording's upload (several instances on PostgreSQL, drop
-- folders on shared storage): another instance finding the same file at the same path
-- waits for it instead of taking it for its own interrupted upload, unless the claimer's
-- heartbeat has stopped. NULL on SQLite, where there is one instance.
ALTER TABLE meetings ADD COLUMN claimed_by TEXT;
