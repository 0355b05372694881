-- The deliveries under a lease are few (those in flight); this keeps "when is the next
-- delivery due" from scanning every pending row of a connector with a backlog.
CREATE INDEX deliveries_leased ON deliveries (connector, lease_until) WHERE lease_until IS NOT NULL;
