-- The outbox held a row per outcome: inserted with its decision, then updated once the broker had
-- it. Per decision that was two heap tuples, four index entries (the update cannot be HOT: the
-- partial index's predicate reads published_at) and a dead tuple for vacuum; in Postgres CPU,
-- about a third of a batch's whole write. The outbox now holds a row per written batch, carrying
-- that batch's outcomes in decision order, and is marked once per batch.
CREATE TABLE outbox_batches (
    batch_id      uuid        PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    event_ids     uuid[]      NOT NULL,   -- the decisions whose outcomes these are
    order_ids     text[]      NOT NULL,   -- each outcome's message key
    payloads      bytea[]     NOT NULL,   -- each outcome message; a resend keeps its outcome id
    CHECK (cardinality(order_ids) = cardinality(event_ids)
           AND cardinality(payloads) = cardinality(event_ids))
);
-- Outcome JSON compresses poorly and is written once, read only after a crash: skip compression.
ALTER TABLE outbox_batches ALTER COLUMN payloads SET STORAGE EXTERNAL;
CREATE INDEX outbox_batches_unpublished_idx ON outbox_batches (created_at)
    WHERE published_at IS NULL;

-- What the old outbox still owed is carried over, one batch per outcome.
INSERT INTO outbox_batches (batch_id, created_at, event_ids, order_ids, payloads)
SELECT event_id, created_at, ARRAY[event_id], ARRAY[order_id], ARRAY[payload]
FROM outbox WHERE published_at IS NULL;
DROP TABLE outbox;

-- The event as received is kept for timelines and what-if replays, read back whole and never
-- queried inside: json (checked, stored as sent) instead of jsonb (parsed into a binary form on
-- every insert) saves a tenth of the write's Postgres CPU.
ALTER TABLE decisions ALTER COLUMN event TYPE json USING event::json;
