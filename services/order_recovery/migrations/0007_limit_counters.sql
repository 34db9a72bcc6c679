-- Counters of the limits that span events decided by different workers (see
-- order_recovery/domain/limits.py): a buyer's refunds per business day, an order's payment
-- attempts, an order's forged-logistics revocations. Events are keyed by order, so one buyer's
-- refunds are decided by several workers at once, each on a history read in its own snapshot.
-- The write transaction adds its batch's deltas to these rows and sets `ceiling` to the highest
-- value its decisions relied on; the check then refuses a batch decided on a stale count, which
-- is decided again on a fresh read. The row lock serialises writers of one counter, so the
-- limit holds whatever the interleaving of partitions, workers and restarts.
CREATE TABLE limit_counters (
    kind        text        NOT NULL,
    subject     text        NOT NULL,   -- buyer_refunds: '<buyer_id> <YYYY-MM-DD>'; else the order id
    used        integer     NOT NULL CHECK (used >= 0),
    ceiling     integer,                -- the bound the last writer relied on; NULL: none
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, subject),
    CONSTRAINT limit_counters_within_ceiling CHECK (used <= ceiling)
);
ALTER TABLE limit_counters ALTER COLUMN ceiling SET STATISTICS 0;

-- What the decisions already written count.
INSERT INTO limit_counters (kind, subject, used)
SELECT 'buyer_refunds', buyer_id || ' ' || to_char(event_day, 'YYYY-MM-DD'), count(*)
FROM compensations WHERE kind = 'refund' GROUP BY buyer_id, event_day
UNION ALL
SELECT 'payment_attempts', order_id, count(*)
FROM decisions WHERE exception_type = 'payment-timeout' GROUP BY order_id
UNION ALL
SELECT 'recovery_revoked', order_id, count(*)
FROM decisions WHERE 'forged_logistics' = ANY(risk_flags) GROUP BY order_id;

-- The worker reads counters, creates them and moves them on; it never resets or removes one.
GRANT SELECT, INSERT ON limit_counters TO recovery_write;
GRANT UPDATE (used, ceiling, updated_at) ON limit_counters TO recovery_write;
