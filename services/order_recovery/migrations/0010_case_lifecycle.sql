-- The case lifecycle (domain.case): a case is one order and one exception type, opened by the
-- first decision that is not a rejection, moved by resolution events, deadlines and reviews, and
-- closed as recovered, refunded, failed, expired or closed without recovery.
--
-- `recovery_cases` stays what it was (a summary of the decisions per order and type, for the
-- reports written before the lifecycle); `cases` is the state machine's row. Every step is a row
-- of `case_steps`, unique per case and step number: two writers that both read step n (two
-- reviewers, a deadline and a resolution on two workers) cannot both store step n + 1, and the
-- update of `cases` checks the step it read (`seq`) as well. Each transition is also appended to
-- the audit log. `resolutions` records every resolution event once, with what it did.
CREATE TABLE cases (
    order_id                text        NOT NULL,
    exception_type          text        NOT NULL,
    platform                text        NOT NULL,
    buyer_id                text        NOT NULL,
    amount_fen              bigint      NOT NULL CHECK (amount_fen >= 0),
    opened_at               timestamptz NOT NULL,   -- event time of the opening exception
    opened_by               uuid        NOT NULL,   -- its event id
    state                   text        NOT NULL,
    seq                     integer     NOT NULL CHECK (seq >= 1),
    state_since             timestamptz NOT NULL,   -- event time of the last step's cause
    deadline_kind           text,
    deadline_due_at         timestamptz,
    deadline_seq            integer,
    held_actions            text[]      NOT NULL DEFAULT '{}',
    fallback_actions        text[]      NOT NULL DEFAULT '{}',
    released                text[]      NOT NULL DEFAULT '{}',   -- action keys sent to executors
    payment_window_ends_at  timestamptz,
    shipping_window_ends_at timestamptz,
    review_overdue          boolean     NOT NULL DEFAULT false,
    closed_at               timestamptz,            -- event time of the step that closed it
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, exception_type),
    CHECK ((deadline_kind IS NULL) = (deadline_due_at IS NULL)
           AND (deadline_kind IS NULL) = (deadline_seq IS NULL))
);
-- The deadline runner's scan: only cases with a pending deadline, oldest first.
CREATE INDEX cases_deadline_idx ON cases (deadline_due_at) WHERE deadline_due_at IS NOT NULL;
-- Open cases by state and age (the snapshot, the review queue).
CREATE INDEX cases_open_idx ON cases (state, state_since) WHERE closed_at IS NULL;

CREATE TABLE case_steps (
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    seq             integer     NOT NULL,
    rule_id         text        NOT NULL,
    from_state      text,                   -- NULL: the step opened the case
    to_state        text        NOT NULL,
    cause_kind      text        NOT NULL,   -- exception | resolution | deadline | review
    cause_ref       text        NOT NULL,   -- event id, deadline kind or review id
    cause_at        timestamptz NOT NULL,   -- event time (a review: the reviewer's time)
    actor           text,                   -- the reviewer
    reason          text        NOT NULL,
    actions         text[]      NOT NULL DEFAULT '{}',
    action_keys     text[]      NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, exception_type, seq),
    FOREIGN KEY (order_id, exception_type) REFERENCES cases
);
-- A review is applied once: a second submission of the same review id is refused here.
CREATE UNIQUE INDEX case_steps_review_idx ON case_steps (cause_ref) WHERE cause_kind = 'review';

CREATE TABLE resolutions (
    event_id        uuid        PRIMARY KEY,   -- the dedup record: a redelivery changes nothing
    event_type      text        NOT NULL,
    order_id        text        NOT NULL,
    exception_type  text        NOT NULL,
    platform        text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    rule_id         text        NOT NULL,      -- the step it caused, or why it changed nothing
    step_seq        integer,                   -- the case step it caused; NULL when ignored
    body            jsonb       NOT NULL,      -- the typed event, to apply it again (an orphan)
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX resolutions_case_idx ON resolutions (order_id, exception_type);
-- Orphans: resolutions that arrived before their case was opened (the decision pipeline lagging
-- behind the resolution topics). Adopted, in event time, once the case exists.
CREATE INDEX resolutions_orphan_idx ON resolutions (occurred_at)
    WHERE rule_id = 'case.ignored.unknown_case';

-- The worker opens and moves cases, records resolutions; it never deletes either, and steps are
-- evidence (no UPDATE).
GRANT SELECT, INSERT ON cases TO recovery_write;
GRANT UPDATE (state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq,
              held_actions, fallback_actions, released, review_overdue, closed_at, updated_at)
    ON cases TO recovery_write;
GRANT SELECT, INSERT ON case_steps TO recovery_write;
GRANT SELECT, INSERT ON resolutions TO recovery_write;
GRANT UPDATE (rule_id, step_seq) ON resolutions TO recovery_write;   -- an orphan adopted
-- Reviews (recoveryctl review approve | reject) move a case as the operator.
GRANT SELECT ON cases, case_steps TO recovery_operate;
GRANT UPDATE (state, seq, state_since, deadline_kind, deadline_due_at, deadline_seq,
              held_actions, fallback_actions, released, review_overdue, closed_at, updated_at)
    ON cases TO recovery_operate;
GRANT INSERT ON case_steps TO recovery_operate;
GRANT INSERT ON audit_log TO recovery_operate;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO recovery_operate;
