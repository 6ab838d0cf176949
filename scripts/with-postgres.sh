#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL started for it:
#
#   scripts/with-postgres.sh cargo test -p engine --all-features --test it
#
# scripts/postgres.sh in a temporary directory (initdb, a free loopback port, or
# $POSTGRES_PORT), its environment exported (LPSTORE_TEST_POSTGRES, a libpq connection string;
# PGHOST, PGPORT, PGUSER, PGDATABASE for psql), always stopped and removed afterwards; see
# with-service.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/with-service.sh" postgres.sh "$@"
