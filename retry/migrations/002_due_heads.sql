-- Tables created by the first version of 001 had next_attempt_at NOT NULL
-- and no due index. Both statements are no-ops on a table 001 created since.
ALTER TABLE {{.Table}} ALTER COLUMN next_attempt_at DROP NOT NULL;
ALTER TABLE {{.Table}} ALTER COLUMN next_attempt_at DROP DEFAULT;
CREATE INDEX IF NOT EXISTS {{ident "_due_idx"}} ON {{.Table}} (grp, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
