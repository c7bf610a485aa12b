-- One login role and one database per service, each role able to reach
-- its own database only; no service logs in as a superuser. Idempotent:
-- run on every `docker compose up` (the postgres-roles step), so a new
-- service or a changed password is applied without a fresh volume.
--
--   psql -v prefix=ticketing -v concert=PW -v queue=PW -v reservation=PW \
--        -v member_balance=PW -v payment=PW -f roles.sql
--
-- `prefix` names the roles and databases (ticketing_concert, ...); the
-- tests use another prefix on the developer's PostgreSQL.
\set ON_ERROR_STOP on

CREATE TEMP TABLE service_login (name text PRIMARY KEY, password text NOT NULL);
INSERT INTO service_login VALUES
    (:'prefix' || '_concert', :'concert'),
    (:'prefix' || '_queue', :'queue'),
    (:'prefix' || '_reservation', :'reservation'),
    (:'prefix' || '_member_balance', :'member_balance'),
    (:'prefix' || '_payment', :'payment');

SELECT format('CREATE ROLE %I', name) FROM service_login
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = name) \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              name, password) FROM service_login \gexec

-- CREATE DATABASE cannot run in a function or transaction: \gexec runs
-- each generated statement on its own.
SELECT format('CREATE DATABASE %I OWNER %I', name, name) FROM service_login
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name) \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', name, name) FROM service_login \gexec
-- Every role may connect to every database unless PUBLIC loses the right.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', name) FROM service_login \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', name, name) FROM service_login \gexec
