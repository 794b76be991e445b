#!/usr/bin/env bash
# The project's tests under cargo nextest: unit tables, the command line against the fault
# server, and the conformance suite on the local provider (a real control plane, kwok pods backed
# by real Dynamo processes) for each supported release.
# Installs cargo-nextest when missing; the harness builds the control plane (Go module proxy),
# installs Dynamo (PyPI) and etcd/NATS (Debian) on first use and caches them under
# ~/.cache/dynamo-conformance.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest (first run on this machine only)"
  cargo install --locked cargo-nextest
fi

profile=${NEXTEST_PROFILE:-default}
junit_dir=target/nextest/$profile
status=0

# Everything, with the conformance suite on the guide's release.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 cargo nextest run --workspace --profile "$profile" \
  -E 'not binary(faults)' || status=$?
[ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/junit-dynamo-0.4.1.xml"

# The conformance suite again, on the newest release.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.6.1 cargo nextest run --test conformance --profile "$profile" || status=$?
[ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/junit-dynamo-1.6.1.xml"

# Faults injected mid-run (a killed frontend process, a deleted worker pod), on their own: they
# break the shared graph, which heals before the next run.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.6.1 cargo nextest run --test faults --profile "$profile" || status=$?
[ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/junit-faults.xml"

# The local cluster (and its agent and Dynamo processes) stays up between runs of the suite;
# the tests leave none behind.
target/debug/dynamo-conformance local down >/dev/null 2>&1 || true

exit "$status"
