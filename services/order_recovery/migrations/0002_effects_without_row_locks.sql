-- The effect tables (actions, compensations, outbox) are written only together with their
-- decision, in the same transaction and from the same staged row (see adapters/postgres/store.py),
-- and decisions are never deleted. Their foreign keys therefore guarded nothing, yet each cost a
-- lookup plus a KEY SHARE row lock on the decision for every effect row: the largest single cost
-- of a batch's write. They go; the indexes that make joins on event_id fast stay.
ALTER TABLE actions DROP CONSTRAINT actions_event_id_fkey;
ALTER TABLE compensations DROP CONSTRAINT compensations_event_id_fkey;
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_fkey;
