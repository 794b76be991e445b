#!/usr/bin/env bash
# The project's tests under cargo nextest: unit tables, the command line against the fault
# server, and the conformance suite on real Dynamo started locally, for each supported release.
# Installs cargo-nextest when missing; the harness installs Dynamo (PyPI) and etcd/NATS (Debian)
# on first use and caches them under ~/.cache/dynamo-conformance.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest (first run on this machine only)"
  cargo install --locked cargo-nextest
fi

profile=${NEXTEST_PROFILE:-default}
junit_dir=target/nextest/$profile
status=0
stop_graph() { target/debug/dynamo-conformance dynamo down --dynamo-version "$1" >/dev/null 2>&1 || true; }

# Everything, with the conformance suite on the guide's release.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 cargo nextest run --workspace --profile "$profile" || status=$?
stop_graph 0.4.1
[ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/junit-dynamo-0.4.1.xml"

# The conformance suite again, on the newest release.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.6.1 cargo nextest run --test conformance --profile "$profile" || status=$?
stop_graph 1.6.1
[ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/junit-dynamo-1.6.1.xml"

# The local cluster stays up between runs of the suite; the tests leave none behind.
target/debug/dynamo-conformance local down >/dev/null 2>&1 || true

exit "$status"
