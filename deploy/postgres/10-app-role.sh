#!/bin/sh
# Runs once, as the superuser, when the postgres container creates its data directory
# (docker-entrypoint-initdb.d). The schema belongs to $POSTGRES_USER, which only `migrate` uses;
# web, worker and beat connect as payhook_app, which can read and write rows but cannot create,
# alter or drop anything. Tables that must be append-only (the audit log) narrow the app role to
# SELECT and INSERT in their own migration (audit 0004, using DATABASE_APP_ROLE), so this role must
# exist before `migrate` runs.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" -v app="${PAYHOOK_APP_ROLE:-payhook_app}" -v app_password="$POSTGRES_APP_PASSWORD" <<'SQL'
CREATE ROLE :"app" LOGIN PASSWORD :'app_password';
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"db" TO :"app";
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";
-- Tables and sequences the owner creates later (every migration) are usable by the app role.
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"app";
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"app";
SQL
