-- Tables of the example kitchen display, in the connection's search_path.
CREATE TABLE IF NOT EXISTS kitchen_orders (
    order_id   text        PRIMARY KEY,
    status     text        NOT NULL,
    version    bigint      NOT NULL,
    table_no   text        NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS kitchen_dishes (
    order_id  text    NOT NULL,
    position  integer NOT NULL,
    name      text    NOT NULL,
    quantity  integer NOT NULL,
    served_at timestamptz,
    PRIMARY KEY (order_id, position)
);

-- One row per apply, in apply order: the audit the demo's summary reads.
-- A real service would keep it for a few days and delete older rows in
-- batches (L17).
CREATE TABLE IF NOT EXISTS kitchen_ledger (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id text        NOT NULL,
    order_id   text        NOT NULL,
    version    bigint      NOT NULL,
    status     text        NOT NULL,
    effective  boolean     NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
