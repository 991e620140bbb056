-- Roles and schema of the saga orchestrator (TR-DB-6). Run once per database by a DBA, as a superuser; running it
-- again is harmless (it converges to the same state and resets the two passwords):
--
--   psql -v owner_password=… -v app_password=… -d <database> -f docker/postgres/bootstrap.sql
--
-- orchestrator_owner owns the schema and runs the migrations (DDL). orchestrator_app is the runtime role: USAGE on
-- the schema and SELECT/INSERT/UPDATE/DELETE on its tables, now and for every table migrations add later; it can
-- read the migrations table but not change it, and it can create nothing anywhere in the database.
\set ON_ERROR_STOP on
\if :{?owner_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'bootstrap.sql: pass -v owner_password=… (the migration role''s password)'; END $$;
\endif
\if :{?app_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'bootstrap.sql: pass -v app_password=… (the runtime role''s password)'; END $$;
\endif

BEGIN;

-- Roles are cluster-wide: another database's bootstrap may be creating them at this very moment.
DO $$
BEGIN
  CREATE ROLE orchestrator_owner LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;
DO $$
BEGIN
  CREATE ROLE orchestrator_app LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

ALTER ROLE orchestrator_owner WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'owner_password';
ALTER ROLE orchestrator_app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'app_password';

CREATE SCHEMA IF NOT EXISTS orchestrator AUTHORIZATION orchestrator_owner;
ALTER SCHEMA orchestrator OWNER TO orchestrator_owner;
REVOKE ALL ON SCHEMA orchestrator FROM PUBLIC;
GRANT USAGE ON SCHEMA orchestrator TO orchestrator_app;

-- Nothing outside the schema: no objects in public, no temporary tables.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO orchestrator_owner, orchestrator_app', current_database()) \gexec

-- Tables the owner creates from now on (migrations), and those that exist already (a re-run after a restore).
ALTER DEFAULT PRIVILEGES FOR ROLE orchestrator_owner IN SCHEMA orchestrator
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orchestrator_app;
ALTER DEFAULT PRIVILEGES FOR ROLE orchestrator_owner IN SCHEMA orchestrator
  GRANT USAGE, SELECT ON SEQUENCES TO orchestrator_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA orchestrator TO orchestrator_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA orchestrator TO orchestrator_app;
SELECT 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON orchestrator.effect_sql_migrations FROM orchestrator_app'
WHERE to_regclass('orchestrator.effect_sql_migrations') IS NOT NULL \gexec

COMMIT;
