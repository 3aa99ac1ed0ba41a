-- Stats reads the group's pending, dead and released entries; without an
-- index covering all three it read the whole table, done and discarded
-- history included (kept for the retention). The cleanup of crashed
-- retriers' leases scans by expiry.
CREATE INDEX IF NOT EXISTS {{ident "_open_idx"}} ON {{.Table}} (grp, state)
    WHERE state IN ('pending', 'dead', 'released');
CREATE INDEX IF NOT EXISTS {{ident "_leases_expires_idx"}} ON {{qual "_leases"}} (grp, expires_at);
