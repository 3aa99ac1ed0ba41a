-- Dedupe records: one row per (namespace, message ID). A claim has done =
-- false and expires after the claim TTL; a done record expires after the
-- retention. Expired rows count as absent and Cleanup deletes them (L17).
CREATE TABLE IF NOT EXISTS {{.Table}} (
    namespace  text        NOT NULL,
    id         text        NOT NULL,
    done       boolean     NOT NULL,
    owner      text        NOT NULL DEFAULT '',
    expires_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, id)
);
CREATE INDEX IF NOT EXISTS {{ident "_expires_idx"}} ON {{.Table}} (namespace, expires_at);
