-- The ordered retry table (L11). One row per parked message of a consumer
-- group; id (assigned at park time) is the replay order within a lane. lane is
-- the ordering unit: 'k:' || key, or 'i:' || message_id for keyless messages,
-- which need no order and so never block each other.
--
-- next_attempt_at is set only on the head of a lane (and on entries an
-- operator made due); entries waiting behind the head have NULL and get a
-- time when they become the head. Claims therefore read only the due index,
-- however long the queues behind blocked keys grow (L17). Changes of a lane's
-- head and parks into the lane serialise on a transaction advisory lock.
CREATE TABLE IF NOT EXISTS {{.Table}} (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grp             text        NOT NULL,
    lane            text        NOT NULL,
    message_id      text        NOT NULL,
    msg_key         text        NOT NULL,
    topic           text        NOT NULL,
    msg_type        text        NOT NULL,
    headers         jsonb,
    payload         bytea,
    msg_time        timestamptz,
    src_partition   integer     NOT NULL DEFAULT 0,
    src_offset      bigint      NOT NULL DEFAULT 0,
    src_queue       text        NOT NULL DEFAULT '',
    state           text        NOT NULL CHECK (state IN ('pending', 'dead', 'released', 'done', 'discarded')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error      text        NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (grp, message_id)
);

-- Entries that block their lane: Blocked, the head of each lane, claims.
CREATE INDEX IF NOT EXISTS {{ident "_lane_idx"}} ON {{.Table}} (grp, lane, id)
    WHERE state IN ('pending', 'dead');
-- Due heads, for claims.
CREATE INDEX IF NOT EXISTS {{ident "_due_idx"}} ON {{.Table}} (grp, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
-- Finished history for Cleanup (L17).
CREATE INDEX IF NOT EXISTS {{ident "_finished_idx"}} ON {{.Table}} (grp, finished_at)
    WHERE state IN ('done', 'discarded', 'released');

-- One lease per lane being replayed: a retrier works on a lane only while it
-- holds an unexpired lease, so two retriers never replay one key at once, and
-- a crashed retrier's lanes are taken over once its leases expire.
CREATE TABLE IF NOT EXISTS {{qual "_leases"}} (
    grp        text        NOT NULL,
    lane       text        NOT NULL,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (grp, lane)
);
