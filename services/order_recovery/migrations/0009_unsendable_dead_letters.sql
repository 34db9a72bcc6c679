-- The last resort of the dead-letter path: a dead letter the broker refused even with its value
-- truncated (a dead-letter topic whose max.message.bytes is smaller still, or a record whose key
-- and headers alone are too large). The worker records it here and commits past the record, so
-- bad input never stops a partition; `recoveryctl dlq list` counts these rows and
-- `recoveryctl dlq unsendable` shows them. One row per source record: a redelivered record (a
-- worker that died before its offset commit) finds its row there and adds nothing.
CREATE TABLE unsendable_dead_letters (
    source_topic      text        NOT NULL,
    source_partition  integer     NOT NULL,
    source_offset     bigint      NOT NULL,
    dlq_topic         text        NOT NULL,
    error_class       text        NOT NULL,   -- dlq.error.class: why the record was dead-lettered
    error_message     text        NOT NULL,
    refusal           text        NOT NULL,   -- why the dead letter could not be produced
    record_key        bytea,
    header_names      text[]      NOT NULL,   -- the dead letter's headers, in order: the record's
    header_values     bytea[]     NOT NULL,   -- own, then the dlq.* ones
    value_prefix      bytea,                  -- the value's first bytes (NULL: the record had none)
    value_bytes       integer     NOT NULL,   -- the whole value's size
    failed_at         timestamptz NOT NULL DEFAULT now(),
    worker_id         text        NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset),
    CHECK (cardinality(header_names) = cardinality(header_values))
);

-- The worker only adds rows (ON CONFLICT DO NOTHING without a conflict target needs no more);
-- reports read them (recoveryctl dlq list / unsendable) through the default privilege of 0006.
GRANT INSERT ON unsendable_dead_letters TO recovery_write;
