-- Tables of the example order service. The outbox tables come from
-- outbox.Migrate. Everything lives in the connection's search_path.
CREATE TABLE IF NOT EXISTS orders (
    id         text        PRIMARY KEY,
    status     text        NOT NULL,
    version    bigint      NOT NULL,
    table_no   text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_created_at ON orders (created_at, id);

CREATE TABLE IF NOT EXISTS order_dishes (
    order_id text    NOT NULL REFERENCES orders (id),
    position integer NOT NULL,
    name     text    NOT NULL,
    quantity integer NOT NULL,
    PRIMARY KEY (order_id, position)
);
