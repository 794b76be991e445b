//! The command line as a user meets it: `api` against the project's fault server, and bad input.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};

use harness::fault_server::{Behaviour, Fault, FaultServer, Flavor, Framing, Quirk, SERVED_MODEL};

const BIN: &str = env!("CARGO_BIN_EXE_dynamo-conformance");

fn conformance(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DYNAMO_CONFORMANCE_CONFIG")
        .output()
        .expect("the binary runs")
}

/// Runs `api` against a fault server in a thread of its own, so the server keeps answering.
/// Streams may be silent for 5 s: enough on a busy 2-core runner, short beside a stall's verdict.
fn api_against(behaviour: Behaviour, profile: &str) -> Output {
    api_against_idle(behaviour, profile, "5")
}

fn api_against_idle(behaviour: Behaviour, profile: &str, idle_secs: &str) -> Output {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FaultServer::start(behaviour)).unwrap();
    let (url, system) = (server.url(), server.system_url());
    let output = conformance(&[
        "api",
        "--url",
        &url,
        "--model",
        SERVED_MODEL,
        "--profile",
        profile,
        "--stream-idle-secs",
        idle_secs,
        "--worker-url",
        &system,
    ]);
    drop(server);
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_prints(output: &Output, text: &str) {
    let out = stdout(output);
    assert!(out.contains(text), "{text:?} not in:\n{out}");
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn api_accepts_every_conforming_variation() {
    for (flavor, profile) in [
        (Flavor::V0_4, "0.4"),
        (Flavor::V1, "1.x"),
        (Flavor::V1, "auto"),
        (Flavor::V0_4, "auto"),
        (Flavor::OpenAi, "openai"),
        (Flavor::OpenAi, "auto"),
    ] {
        for framing in [
            Framing::Lf,
            Framing::CrLf,
            Framing::Cr,
            Framing::Comments,
            Framing::Split,
        ] {
            let output = api_against(Behaviour::conforming(flavor).with_framing(framing), profile);
            assert_eq!(
                output.status.code(),
                Some(0),
                "{flavor:?} {framing:?} --profile {profile}:\n{}",
                stdout(&output)
            );
            assert_prints(&output, ", 0 failed");
        }
    }
    for (flavor, quirk) in [
        (Flavor::V1, Quirk::UsageChunkUnasked),
        (Flavor::V0_4, Quirk::ErrorStringForMalformed),
    ] {
        let output = api_against(Behaviour::conforming(flavor).with_quirk(quirk), "auto");
        assert_eq!(
            output.status.code(),
            Some(0),
            "{quirk:?}:\n{}",
            stdout(&output)
        );
    }
}

#[test]
fn api_reports_which_release_an_endpoint_matches() {
    let output = api_against(Behaviour::conforming(Flavor::V0_4), "auto");
    assert_prints(&output, "profile: auto matched 0.4");
    let output = api_against(Behaviour::conforming(Flavor::V1), "auto");
    assert_prints(&output, "profile: auto matched 1.x");
}

#[test]
fn api_holds_an_endpoint_to_the_profile_asked_for() {
    let output = api_against(Behaviour::conforming(Flavor::V1), "0.4");
    assert_eq!(output.status.code(), Some(1));
    for rule in ["models.entry", "stream.usage", "error.body"] {
        assert!(
            stdout(&output).contains(&format!("FAIL  {rule}")),
            "{rule}: {}",
            stdout(&output)
        );
    }
}

#[test]
fn api_rejects_each_protocol_violation_naming_its_rule() {
    let cases = [
        (Fault::Unhealthy, "health.status"),
        (Fault::ModelsNotAList, "models.list"),
        (Fault::ModelEntryIncomplete, "models.entry"),
        (Fault::WrongContentType, "response.content_type"),
        (Fault::MissingId, "response.id"),
        (Fault::ModelNotEchoed, "response.model"),
        (Fault::NoFinishReason, "response.finish_reason"),
        (Fault::EmptyText, "response.text"),
        (Fault::UsageDoesNotAddUp, "usage.arithmetic"),
        (Fault::ExceedsMaxTokens, "usage.max_tokens"),
        (Fault::StreamWrongContentType, "stream.content_type"),
        (Fault::NoDone, "stream.done"),
        (Fault::DataAfterDone, "stream.done"),
        (Fault::InvalidJsonEvent, "stream.event_json"),
        (Fault::ChangingId, "stream.id"),
        (Fault::WrongChunkObject, "stream.object"),
        (Fault::FinishReasonEveryChunk, "stream.finish_reason"),
        (Fault::Stall, "stream.terminated"),
        (Fault::ErrorEvent, "stream.error_event"),
        (Fault::MisplacedStreamUsage, "stream.usage"),
        (Fault::AcceptsUnknownModel, "error.status"),
        (Fault::ServerErrorOnMalformed, "error.status"),
        (Fault::PlainTextErrors, "error.body"),
        (Fault::ErrorEventWithoutData, "stream.error_event"),
        (Fault::StreamedRejectionsAccepted, "error.status"),
        (Fault::UnknownField, "stream.framing"),
        (Fault::ServerErrorOnZeroMaxTokens, "error.status"),
        (Fault::IgnoresN, "choices.n"),
        (Fault::LengthWithoutLimit, "usage.length_at_context"),
        (Fault::ReplacementCharInStream, "stream.utf8"),
        (Fault::IgnoresStop, "stop.sequence"),
        (Fault::LiveFailsWhileGenerating, "worker.live"),
    ];
    let mut rules = std::collections::BTreeSet::new();
    for (fault, rule) in cases {
        let output = api_against(Behaviour::conforming(Flavor::V1).with_fault(fault), "1.x");
        let out = stdout(&output);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{fault:?} was not rejected:\n{out}"
        );
        assert!(
            out.lines().any(|l| l.starts_with(&format!("FAIL  {rule}"))),
            "{fault:?} not reported as {rule}:\n{out}"
        );
        assert!(out.contains("violated rules: "), "{out}");
        rules.insert(rule);
    }
    assert!(
        rules.len() >= 12,
        "only {} distinct rules: {rules:?}",
        rules.len()
    );
}

/// The lines of `out` that fail `rule` under the profile (not the strict openai verdict).
fn failures<'a>(out: &'a str, rule: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.starts_with(&format!("FAIL  {rule} ")))
        .collect()
}

#[test]
fn an_error_event_without_data_is_seen_in_the_raw_framing() {
    let output = api_against(
        Behaviour::conforming(Flavor::V1).with_fault(Fault::ErrorEventWithoutData),
        "auto",
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let lines = failures(&out, "stream.error_event");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("an error event arrived: event: error at line 1 (no data)")),
        "{out}"
    );
    assert!(
        failures(&out, "stream.framing")
            .iter()
            .any(|l| l.contains("a block with no data at line 1 (event: error)")),
        "{out}"
    );
}

#[test]
fn a_streamed_rejection_answered_200_fails_error_status() {
    let output = api_against(
        Behaviour::conforming(Flavor::V1).with_fault(Fault::StreamedRejectionsAccepted),
        "auto",
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let lines = failures(&out, "error.status");
    for label in ["unknown model", "invalid JSON", "no prompt", "no messages"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("(stream) ({label})"))
                    && l.contains("data event 1 carrying an error")),
            "{label}: {out}"
        );
    }
    // The unstreamed twins are still rejected properly.
    assert!(
        out.contains("PASS  error.status             POST /v1/completions (unknown model)"),
        "{out}"
    );
}

#[test]
fn api_reports_the_strict_openai_verdict_beside_the_release_profile() {
    let output = api_against(Behaviour::conforming(Flavor::V1), "auto");
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("profile: auto matched 1.x"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("openai: FAIL  error.body") && l.contains("OpenAI's {\"error\"")),
        "{out}"
    );
    assert!(
        out.contains("openai (strict, informational): ")
            && out.contains("failed; breaks error.body"),
        "{out}"
    );
    let openai = api_against(Behaviour::conforming(Flavor::OpenAi), "openai");
    let out = stdout(&openai);
    assert_eq!(openai.status.code(), Some(0), "{out}");
    assert!(out.contains("profile: openai"), "{out}");
}

#[test]
fn a_stall_fails_within_the_idle_timeout_naming_what_came_last() {
    let started = std::time::Instant::now();
    let output = api_against_idle(
        Behaviour::conforming(Flavor::V1).with_fault(Fault::Stall),
        "1.x",
        "1",
    );
    let out = stdout(&output);
    assert!(
        out.contains("silence for 1s after 2 events, the last at"),
        "{out}"
    );
    assert!(
        out.contains("not run: an earlier stream on this endpoint stalled"),
        "{out}"
    );
    // One idle timeout (1 s here) for the first stalled stream; the streams after it are not sent.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}

fn assert_one_line_error(output: &Output, code: i32, contains: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "more than one line: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    assert!(err.contains(contains), "{err:?} lacks {contains:?}");
}

#[test]
fn an_unreachable_url_is_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = conformance(&[
        "api",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--model",
        "m",
    ]);
    assert_one_line_error(&output, 2, "no HTTP answer from");
}

#[test]
fn a_wrong_model_name_is_one_line_listing_what_is_served() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(FaultServer::start(Behaviour::conforming(Flavor::V1)))
        .unwrap();
    let output = conformance(&["api", "--url", &server.url(), "--model", "llama"]);
    assert_one_line_error(&output, 2, "model 'llama' is not served at");
    assert!(stderr(&output).contains("it serves: Qwen/Qwen3-0.6B"));
}

#[test]
fn an_invalid_profile_is_one_line() {
    let output = conformance(&[
        "api",
        "--url",
        "http://127.0.0.1:1",
        "--model",
        "m",
        "--profile",
        "2.0",
    ]);
    assert_one_line_error(
        &output,
        2,
        "unknown profile '2.0' (expected one of: 0.4, 0.5, 0.6, 0.9, 1.x, openai, auto)",
    );
}

#[test]
fn an_invalid_url_is_one_line() {
    let output = conformance(&["api", "--url", "localhost:9000", "--model", "m"]);
    assert_one_line_error(&output, 2, "invalid URL");
}

#[test]
fn a_server_that_does_not_speak_http_is_one_line() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n");
        }
    });
    let output = conformance(&["api", "--url", &url, "--model", "m"]);
    assert_one_line_error(&output, 2, "no HTTP answer from");
}

#[test]
fn a_dynamo_version_that_is_no_release_number_is_one_line() {
    let output = conformance(&["run", "--dynamo-version", "latest", "--list"]);
    assert_one_line_error(
        &output,
        2,
        "'latest' is not a Dynamo release number (expected e.g. 0.4.1 or 1.3.0.post1)",
    );
    let output = conformance(&["run", "--dynamo-version", "0.3.2", "--list"]);
    assert_one_line_error(
        &output,
        2,
        "Dynamo 0.3.2 is older than 0.4.1, the oldest release this suite judges",
    );
}

/// Asks PyPI (through pip, as an install would).
#[test]
fn a_dynamo_version_not_on_pypi_is_one_line_before_any_work() {
    let output = conformance(&["run", "--dynamo-version", "1.7.0"]);
    assert_one_line_error(
        &output,
        2,
        "Dynamo 1.7.0 is not on PyPI (ai-dynamo releases there: ",
    );
    assert!(
        !stdout(&output).contains("cluster ready"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn version_skew_across_planes_is_one_line() {
    let output = conformance(&[
        "run",
        "--dynamo-version",
        "1.6.1",
        "--workers-version",
        "1.0.2",
    ]);
    assert_one_line_error(
        &output,
        2,
        "Dynamo 1.0.2's workers cannot serve beside Dynamo 1.6.1's frontend: 1.0.2 runs on etcd and NATS, 1.6.1 on file discovery",
    );
    assert!(!stdout(&output).contains("cluster"), "{}", stdout(&output));
}

#[test]
fn a_release_without_a_profile_of_its_own_names_the_one_that_judges_it() {
    let output = conformance(&["run", "--dynamo-version", "1.6.0", "--list"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let judged = "1.6.0"
        .parse::<harness::release::DynamoVersion>()
        .unwrap()
        .judged_by();
    assert!(
        judged.contains("1.6.0 has no profile of its own"),
        "{judged}"
    );
    assert!(
        stdout(&output).contains(&format!("Dynamo 1.6.0 ({judged})")),
        "{}",
        stdout(&output)
    );
}

#[test]
fn an_invalid_config_file_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conformance.yaml");
    std::fs::write(&file, "model: [unclosed\n").unwrap();
    let output = conformance(&["run", "--config", file.to_str().unwrap(), "--list"]);
    assert_one_line_error(&output, 2, "invalid configuration file");
}

#[test]
fn a_named_helm_that_cannot_serve_is_one_line_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("helm");
    let output = conformance(&["run", "--helm", missing.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "cannot run the Helm named by --helm");
    // Helm 2 answers `version` too, but cannot install the guide's charts.
    let old = dir.path().join("helm2");
    std::fs::write(&old, "#!/bin/sh\necho v2.17.0\n").unwrap();
    let mut mode = std::fs::metadata(&old).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&old, mode).unwrap();
    let output = conformance(&["run", "--helm", old.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "is v2.17.0; the suite needs Helm 3.8 or newer");
}

#[test]
fn a_named_chart_that_is_not_there_is_one_line_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("dynamo-crds-0.4.1.tgz");
    let output = conformance(&["run", "--crds-chart", missing.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "--crds-chart");
    assert_one_line_error(&output, 2, "no such file or directory");
    // A charts directory holding another version names what it holds.
    std::fs::write(dir.path().join("dynamo-crds-0.4.0.tgz"), "").unwrap();
    let output = conformance(&["run", "--charts-dir", dir.path().to_str().unwrap()]);
    assert_one_line_error(
        &output,
        2,
        "holds no dynamo-crds chart for version 0.4.1 (looked for dynamo-crds-0.4.1.tgz and dynamo-crds/Chart.yaml); it holds dynamo-crds-0.4.0.tgz",
    );
}

#[test]
fn a_platform_values_file_that_cannot_serve_is_one_line_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("values.yaml");
    let output = conformance(&["run", "--platform-values", missing.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "--platform-values");
    let list = dir.path().join("list.yaml");
    std::fs::write(&list, "- persistence\n- nats\n").unwrap();
    let output = conformance(&["run", "--platform-values", list.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "not a YAML mapping of chart values");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "persistence: {enabled: [\n").unwrap();
    let output = conformance(&["run", "--platform-values", broken.to_str().unwrap()]);
    assert_one_line_error(&output, 2, "--platform-values");
}

#[test]
fn the_case_list_is_static_and_ordered() {
    let output = conformance(&["run", "--list", "--dynamo-version", "1.6.1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(|l| l.strip_prefix("[skipped] ").unwrap_or(l))
        .collect();
    assert_eq!(names.first(), Some(&"guide::gpus::advertised"), "{names:?}");
    let position = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} is not listed: {names:?}"))
    };
    assert!(
        position("guide::gpus::one_gpu_pod") < position("guide::storage::provisioner_available"),
        "the GPU gate comes before any Dynamo stage: {names:?}"
    );
    assert!(position("guide::crds::established") < position("guide::platform::operator_available"));
    assert!(position("guide::secret::hf_token_secret") < position("guide::graph::ready"));
    assert!(position("guide::graph::ready") < position("guide::api::frontend_health"));
    assert!(position("guide::api::frontend_health") < position("guide::workers::decode_health"));
    assert!(
        names.contains(&"guide::api::completion_stream"),
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"guide::workers::disaggregation"));
}

#[test]
fn a_missing_kubeconfig_is_one_line() {
    let output = conformance(&[
        "run",
        "--provider",
        "existing",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    assert_one_line_error(&output, 2, "cannot use kubeconfig /nonexistent/kubeconfig");
}

#[test]
fn a_broken_kubeconfig_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubeconfig");
    std::fs::write(&file, "clusters: [\n").unwrap();
    let output = conformance(&[
        "run",
        "--provider",
        "existing",
        "--kubeconfig",
        file.to_str().unwrap(),
    ]);
    assert_one_line_error(&output, 2, "cannot use kubeconfig");
}

#[test]
fn an_unreachable_api_server_is_one_line() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\n\
         contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\nusers: [{{name: u, user: {{token: x}}}}]\ncurrent-context: c\n"
    );
    std::fs::write(&file, kubeconfig).unwrap();
    let output = conformance(&[
        "run",
        "--provider",
        "existing",
        "--kubeconfig",
        file.to_str().unwrap(),
    ]);
    assert_one_line_error(
        &output,
        2,
        "cannot reach the Kubernetes API server at https://127.0.0.1:",
    );
}

#[test]
fn an_unknown_gpu_mode_is_one_line() {
    let output = conformance(&["run", "--provider", "kind", "--gpus", "some"]);
    assert_one_line_error(&output, 2, "gpus");
}

#[test]
fn the_kind_provider_lists_the_gpu_gate_before_the_guide() {
    let output = conformance(&["run", "--provider", "kind", "--gpus", "simulated", "--list"]);
    let text = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(|l| l.strip_prefix("[skipped] ").unwrap_or(l))
        .collect();
    assert_eq!(names.first(), Some(&"guide::gpus::advertised"), "{names:?}");
    assert!(
        names.contains(&"guide::platform::claims_bound"),
        "{names:?}"
    );
}

#[test]
fn local_withdraw_and_restore_keep_the_registry_list_and_say_what_is_withdrawn() {
    let cache = tempfile::tempdir().expect("a cache directory");
    let dir = cache.path().to_str().expect("a UTF-8 path");
    let image = "bitnami/etcd:3.5.18-debian-12-r5";
    let out = conformance(&["local", "withdraw", image, "--cache-dir", dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_prints(
        &out,
        &format!("withdrew {image}; withdrawn from the local registry: {image}"),
    );
    let listed = std::fs::read_to_string(cache.path().join("agent/registry/withdrawn"))
        .expect("the registry's list");
    assert_eq!(listed, format!("{image}\n"));
    let out = conformance(&[
        "local",
        "restore",
        &format!("docker.io/{image}"),
        "--cache-dir",
        dir,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_prints(
        &out,
        &format!("restored docker.io/{image}; withdrawn from the local registry: none"),
    );
}
