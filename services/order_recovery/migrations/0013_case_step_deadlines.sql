-- The deadline each case step set (domain.case: every step enters a state and sets that state's
-- deadline, or none), so that `recoveryctl case show` can say which step set which deadline and
-- when it was due, not only which deadline fired: `cases` keeps the pending one alone.
-- Nullable: a step that set no deadline, and every step stored before this migration (unknown).
-- INSERT on case_steps is granted table-wide (0010), so the new columns need no grant.
ALTER TABLE case_steps
    ADD COLUMN deadline_kind   text,
    ADD COLUMN deadline_due_at timestamptz,
    ADD CONSTRAINT case_steps_deadline_whole
        CHECK ((deadline_kind IS NULL) = (deadline_due_at IS NULL));
