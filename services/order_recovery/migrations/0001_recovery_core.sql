-- Core tables of the recovery service. Every side effect is keyed so that processing the same
-- event twice changes nothing: decisions are unique per event, compensations per order and
-- exception type, outbox rows per event.

CREATE TABLE recovery_cases (
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    platform        text        NOT NULL,
    merchant_id     text        NOT NULL,
    buyer_id        text        NOT NULL,
    status          text        NOT NULL,
    opened_at       timestamptz NOT NULL,   -- event time of the first exception
    updated_at      timestamptz NOT NULL,   -- wall time of the latest decision
    recovered_at    timestamptz,            -- wall time of the decision that recovered it
    last_event_id   uuid        NOT NULL,
    PRIMARY KEY (order_id, exception_type)
);

CREATE TABLE decisions (
    event_id          uuid        PRIMARY KEY,   -- the dedup record
    order_id          text        NOT NULL,
    exception_type    text        NOT NULL,
    platform          text        NOT NULL,
    merchant_id       text        NOT NULL,
    buyer_id          text        NOT NULL,
    category          text        NOT NULL,
    amount_fen        bigint      NOT NULL CHECK (amount_fen >= 0),
    occurred_at       timestamptz NOT NULL,
    decided_at        timestamptz NOT NULL DEFAULT now(),
    outcome           text        NOT NULL,
    rule_ids          text[]      NOT NULL,
    risk_flags        text[]      NOT NULL,
    reason            text        NOT NULL,
    policy_version    text        NOT NULL,
    source_topic      text        NOT NULL,
    source_partition  integer     NOT NULL,
    source_offset     bigint      NOT NULL,
    event             jsonb       NOT NULL      -- the event as received, for timelines and what-if
);
CREATE INDEX decisions_order_idx ON decisions (order_id, occurred_at);
-- BRIN: decided_at only grows, and a BRIN index costs next to nothing to maintain per insert.
CREATE INDEX decisions_decided_at_idx ON decisions USING brin (decided_at);

CREATE TABLE actions (
    event_id  uuid    NOT NULL REFERENCES decisions (event_id),
    seq       integer NOT NULL,
    action    text    NOT NULL,
    PRIMARY KEY (event_id, seq)
);

CREATE TABLE compensations (
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('coupon', 'refund')),
    amount_fen      bigint      NOT NULL CHECK (amount_fen >= 0),
    buyer_id        text        NOT NULL,
    event_day       date        NOT NULL,   -- calendar day of the event (event time)
    event_id        uuid        NOT NULL REFERENCES decisions (event_id),
    decided_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, exception_type)  -- a coupon or refund can never be granted twice
);
CREATE INDEX compensations_buyer_day_idx ON compensations (buyer_id, event_day) WHERE kind = 'refund';
CREATE INDEX compensations_decided_at_idx ON compensations USING brin (decided_at);

-- Append-only audit of every case state change, kept at least 180 days.
CREATE TABLE audit_log (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    event_id        uuid        NOT NULL,
    from_status     text,
    to_status       text        NOT NULL,
    detail          jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_order_idx ON audit_log (order_id, at);

CREATE FUNCTION audit_log_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        RAISE EXCEPTION 'audit_log is append-only: UPDATE refused';
    END IF;
    IF OLD.at > now() - interval '180 days' THEN
        RAISE EXCEPTION 'audit_log rows are kept 180 days: row % is younger', OLD.id;
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard();

-- Outcome events waiting to be published (transactional outbox).
CREATE TABLE outbox (
    event_id      uuid        PRIMARY KEY REFERENCES decisions (event_id),
    outcome_id    text        NOT NULL,      -- derived from event_id: a resend keeps it
    order_id      text        NOT NULL,
    payload       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (created_at) WHERE published_at IS NULL;
