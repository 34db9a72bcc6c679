-- Least privilege. The roles are cluster-wide and made by a superuser before any migration
-- (deploy/postgres/roles.sql: `make up`, docker-compose's init script); this migration, run by
-- their owner recovery_owner, gives each group what it needs in this database and nothing more:
--
--   recovery_write    the worker: exactly the statements of adapters/postgres/store.py (the
--                     pipeline, the outbox relay and marker). It inserts decisions and their
--                     effects and can never change or remove one: no UPDATE, DELETE or TRUNCATE of
--                     audit_log or compensations (TRUNCATE would not even fire audit_log's row
--                     trigger), and as a non-owner it cannot drop or alter that trigger, its
--                     function or any table.
--   recovery_read     reports (recoveryctl stats, case show, reconcile, simulate): SELECT.
--   recovery_operate  operators: recovery_read's through membership (roles.sql). `dlq replay`
--                     writes only to Kafka; a command that writes here grants its own privileges
--                     to recovery_operate in its migration.
--
-- Every later migration grants what its new tables need (see README.md in this directory).

DO $$
DECLARE
    missing text;
BEGIN
    SELECT string_agg(name, ', ') INTO missing
    FROM unnest(ARRAY['recovery_owner', 'recovery_write', 'recovery_read', 'recovery_operate'])
         AS name
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'the database roles % do not exist', missing
            USING HINT = 'a superuser runs deploy/postgres/roles.sql first (make up does)';
    END IF;
    -- Only the service's roles connect (PUBLIC may by default). The worker's per-session staging
    -- table (decision_stage) is a temporary table: TEMPORARY is the one database privilege it
    -- needs beyond CONNECT.
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO recovery_write, recovery_read',
                   current_database());
    EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO recovery_write', current_database());
END $$;

-- No one but the owner creates objects (Postgres 15 already revokes this from PUBLIC; a cluster
-- upgraded from an older version may still have it).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO recovery_write, recovery_read;

-- The worker. History reads (decisions, recovery_cases, compensations) and the dedup probe need
-- SELECT; the outbox relay reads unpublished batches and the backlog.
GRANT SELECT, INSERT ON decisions TO recovery_write;
GRANT INSERT ON actions TO recovery_write;
GRANT SELECT, INSERT ON compensations TO recovery_write;
GRANT INSERT ON audit_log TO recovery_write;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO recovery_write;
-- A case is upserted: its identity (order, exception type, platform, merchant, buyer) is written
-- once; its state moves on.
GRANT SELECT, INSERT ON recovery_cases TO recovery_write;
GRANT UPDATE (status, updated_at, opened_at, recovered_at, last_event_id)
    ON recovery_cases TO recovery_write;
-- A batch's outcomes are written once; marking them published is the only change.
GRANT SELECT, INSERT ON outbox_batches TO recovery_write;
GRANT UPDATE (published_at) ON outbox_batches TO recovery_write;

-- Reports read everything, the tables later migrations add included (default privileges apply
-- to what recovery_owner creates from now on).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO recovery_read;
ALTER DEFAULT PRIVILEGES FOR ROLE recovery_owner IN SCHEMA public
    GRANT SELECT ON TABLES TO recovery_read;
