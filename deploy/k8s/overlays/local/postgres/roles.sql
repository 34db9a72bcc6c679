-- The cluster's roles for order-recovery, and the current database handed to its owner.
--
-- Run by a superuser with psql, connected to the service's database: by deploy/local/stack.sh on
-- every start, by the Postgres image's entrypoint under docker-compose (mounted into
-- /docker-entrypoint-initdb.d), and by the tests when they start Postgres in a container. Roles
-- are cluster-wide, so they are made here rather than in a migration (which runs as the owner, and
-- the owner may not create roles). Idempotent: a role is created when missing and its password set
-- from the environment every time.
--
--   recovery_owner     login  owns the database and every object in it; runs the migrations
--   recovery_write     group  what the pipeline reads and writes (granted by the migrations)
--   recovery_read      group  SELECT, for reports
--   recovery_operate   group  recovery_read's, plus what operators' commands write
--   recovery_worker    login  in recovery_write: the worker (DATABASE_URL)
--   recovery_reports   login  in recovery_read: recoveryctl's reports (DATABASE_READER_URL)
--   recovery_operator  login  in recovery_operate: operators (DATABASE_OPERATOR_URL)
--
-- Privileges belong to the groups, so a deployment can add a login (one per worker host, one per
-- person, a second one while rotating a password) without repeating any grant.
--
-- The passwords come from RECOVERY_OWNER_PASSWORD, RECOVERY_WORKER_PASSWORD,
-- RECOVERY_REPORTS_PASSWORD and RECOVERY_OPERATOR_PASSWORD. Postgres stores them as SCRAM-SHA-256
-- verifiers (password_encryption's default since Postgres 14).
--
-- A database first migrated by a single all-powerful user (the stack before these roles) is
-- upgraded here too: everything in its public schema is handed to recovery_owner, so that the
-- migrations, run by recovery_owner, can grant on it.

\set ON_ERROR_STOP on
\getenv owner_password RECOVERY_OWNER_PASSWORD
\getenv worker_password RECOVERY_WORKER_PASSWORD
\getenv reports_password RECOVERY_REPORTS_PASSWORD
\getenv operator_password RECOVERY_OPERATOR_PASSWORD
SELECT :{?owner_password} AND :{?worker_password} AND :{?reports_password}
       AND :{?operator_password} AS passwords_set \gset
\if :passwords_set
\else
  \warn 'roles.sql: set RECOVERY_OWNER_PASSWORD, RECOVERY_WORKER_PASSWORD, RECOVERY_REPORTS_PASSWORD and RECOVERY_OPERATOR_PASSWORD'
  SELECT 1 / 0 AS "a password variable is not set";
\endif

SELECT format('CREATE ROLE %I', name)
FROM unnest(ARRAY['recovery_owner', 'recovery_write', 'recovery_read', 'recovery_operate',
                  'recovery_worker', 'recovery_reports', 'recovery_operator']) AS name
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) \gexec

-- Attributes are set every time: a role made by hand with more power loses it.
ALTER ROLE recovery_write NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE recovery_read NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
ALTER ROLE recovery_operate NOLOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS;
ALTER ROLE recovery_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'owner_password';
ALTER ROLE recovery_worker LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'worker_password';
ALTER ROLE recovery_reports LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'reports_password';
ALTER ROLE recovery_operator LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
    NOBYPASSRLS PASSWORD :'operator_password';

-- Memberships not yet granted (granting one twice only raises a notice, but says nothing useful).
SELECT format('GRANT %I TO %I', grp, member)
FROM (VALUES ('recovery_write', 'recovery_worker'), ('recovery_read', 'recovery_reports'),
             ('recovery_read', 'recovery_operate'), ('recovery_operate', 'recovery_operator'))
     AS m(grp, member)
WHERE NOT pg_has_role(member, grp, 'MEMBER') \gexec

ALTER DATABASE :"DBNAME" OWNER TO recovery_owner;

-- Everything in the public schema not yet recovery_owner's. A table's indexes, and sequences it owns
-- (bigserial), follow it and cannot be moved on their own.
DO $$
DECLARE
    stmt text;
BEGIN
    FOR stmt IN
        SELECT format('ALTER %s %s OWNER TO recovery_owner',
                      CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                                     WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                                     ELSE 'TABLE' END,
                      c.oid::regclass)
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND c.relowner <> 'recovery_owner'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
        UNION ALL
        SELECT format('ALTER ROUTINE %s OWNER TO recovery_owner', p.oid::regprocedure)
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> 'recovery_owner'::regrole
    LOOP
        EXECUTE stmt;
    END LOOP;
END $$;
