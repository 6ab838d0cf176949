#!/usr/bin/env bash
# Runs a command with a real single-node SeaweedFS S3 gateway started for it:
#
#   scripts/with-seaweedfs.sh cargo test -p objectstore
#
# scripts/seaweedfs.sh in a temporary directory (ports from $SEAWEEDFS_PORT, default 18380),
# its environment exported (SEAWEEDFS_S3_ENDPOINT, SEAWEEDFS_S3_ACCESS_KEY,
# SEAWEEDFS_S3_SECRET_KEY, SEAWEEDFS_S3_REGION), always stopped afterwards; see
# with-service.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/with-service.sh" seaweedfs.sh "$@"
