-- Pruning delivered events (state.delivered_retention) walks them oldest first.
CREATE INDEX events_created ON events (created_at);
