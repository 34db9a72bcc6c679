-- Action commands on a topic of their own: a transactional outbox.
--
-- Every case step that releases actions (domain.case: the opening decision, a fallback after a
-- failed re-query, a reviewer's approval, a deadline) writes one row here per action, in the
-- same transaction as the step itself: the hot path's OPEN_CASES statement
-- (adapters/postgres/store.py) and the case store's save (adapters/postgres/cases.py). The
-- lifecycle process's command relay (core/commands.py) sends the unpublished rows to
-- `{prefix}action-commands`, oldest first, keyed by order id, and marks them once the broker has
-- acknowledged them: at-least-once delivery, and the action key, unique here and in the message,
-- is what an executor applies an action at most once under.
--
-- Rows are marked, not removed: `published_at` says when a command went out (recoveryctl case
-- show, an operator asking "was the refund ever sent?"). case_steps stays the evidence of what
-- was released; this table is only the way out, so it has no foreign key (a check per row on
-- the decision hot path for a pair of rows written by the same statement).
CREATE TABLE case_commands (
    id              bigserial   PRIMARY KEY,            -- the outbox's order: oldest first
    action_key      text        NOT NULL UNIQUE,        -- order/type/step/action (domain.case)
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    platform        text        NOT NULL,
    step_seq        integer     NOT NULL CHECK (step_seq >= 1),
    action          text        NOT NULL,
    rule_id         text        NOT NULL,               -- the step's rule
    amount_fen      bigint      NOT NULL CHECK (amount_fen >= 0),   -- the case's order amount
    issued_at       timestamptz NOT NULL,               -- event time of the step's cause
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz                         -- NULL: not acknowledged by the broker yet
);
-- The relay's scan: only what is still to send, in outbox order.
CREATE INDEX case_commands_unpublished_idx ON case_commands (id) WHERE published_at IS NULL;

-- The worker writes commands with its steps (decisions, resolutions, deadlines) and relays them:
-- it reads and marks them, never rewrites or removes one.
GRANT SELECT, INSERT ON case_commands TO recovery_write;
GRANT UPDATE (published_at) ON case_commands TO recovery_write;
GRANT USAGE ON SEQUENCE case_commands_id_seq TO recovery_write;
-- A review's approval releases the held actions as the operator: it writes their commands (the
-- lifecycle process relays them).
GRANT INSERT ON case_commands TO recovery_operate;
GRANT USAGE ON SEQUENCE case_commands_id_seq TO recovery_operate;
