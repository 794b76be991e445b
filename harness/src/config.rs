//! The suite's configuration, merged from flags, then environment, then a YAML file, then defaults.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::openai::ApiTimeouts;
use crate::profile::ProfileError;
use crate::release::{DynamoVersion, ReleaseError};

/// The environment variable naming a configuration file.
pub const CONFIG_ENV: &str = "DYNAMO_CONFORMANCE_CONFIG";
/// The prefix of every environment variable the suite reads.
pub const ENV_PREFIX: &str = "DYNAMO_CONFORMANCE_";
/// The guide's model.
pub const GUIDE_MODEL: &str = "Qwen/Qwen3-0.6B";
/// The guide's namespace.
pub const GUIDE_NAMESPACE: &str = "dynamo-cloud";

/// Where the cluster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Everything on this machine: real Dynamo from PyPI (and, with the cluster tier, a real control plane).
    Local,
    /// An existing cluster, by kubeconfig and context.
    Existing,
    /// A kind cluster with the GPU operator, on a GPU runner.
    Kind,
}

impl FromStr for ProviderKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "local" => Ok(ProviderKind::Local),
            "existing" => Ok(ProviderKind::Existing),
            "kind" => Ok(ProviderKind::Kind),
            other => Err(ConfigError::Invalid {
                key: "provider",
                value: other.to_string(),
                expected: "one of: local, existing, kind",
            }),
        }
    }
}

impl ProviderKind {
    /// The name used in flags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Existing => "existing",
            ProviderKind::Kind => "kind",
        }
    }
}

/// Whether the kind provider uses the machine's GPUs or simulates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuMode {
    /// Real GPUs when `nvidia-smi -L` lists any, else simulated.
    Auto,
    /// The GPU runner path: the host's GPUs, the published kind node image, the GPU operator.
    Real,
    /// The path of a machine without GPU or registry: everything built here, GPUs simulated.
    Simulated,
}

impl FromStr for GpuMode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(GpuMode::Auto),
            "real" => Ok(GpuMode::Real),
            "simulated" => Ok(GpuMode::Simulated),
            other => Err(ConfigError::Invalid {
                key: "gpus",
                value: other.to_string(),
                expected: "one of: auto, real, simulated",
            }),
        }
    }
}

impl GpuMode {
    /// The name used in flags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuMode::Auto => "auto",
            GpuMode::Real => "real",
            GpuMode::Simulated => "simulated",
        }
    }
}

/// The NVIDIA GPU operator chart the kind provider's GPU path installs, unless configured.
pub const GPU_OPERATOR_VERSION: &str = "v25.3.4";

/// One source of settings; unset fields fall through to the next source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ConfigLayer {
    /// `local`, `existing` or `kind`.
    pub provider: Option<String>,
    /// The Dynamo release, e.g. `0.4.1`.
    pub dynamo_version: Option<String>,
    /// Another release for the workers beside that release's frontend (version skew), e.g. `1.5.1`.
    pub workers_version: Option<String>,
    /// The model the graph serves.
    pub model: Option<String>,
    /// The namespace of the platform and the graph.
    pub namespace: Option<String>,
    /// Where installed tools and generated models are cached.
    pub cache_dir: Option<PathBuf>,
    /// Where reports and evidence are written.
    pub report_dir: Option<PathBuf>,
    /// Seconds a non-streamed request may take.
    pub request_timeout_secs: Option<u64>,
    /// Seconds of silence tolerated inside a stream.
    pub stream_idle_secs: Option<u64>,
    /// Seconds a whole stream may take.
    pub stream_deadline_secs: Option<u64>,
    /// Seconds a deployment may take to become ready.
    pub ready_timeout_secs: Option<u64>,
    /// The kubeconfig of an existing cluster (default: `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<String>,
    /// A file holding the Hugging Face token (default: `$HF_TOKEN`).
    pub hf_token_file: Option<PathBuf>,
    /// A local copy of the local-path-provisioner manifest, for air-gapped clusters.
    pub provisioner_manifest: Option<PathBuf>,
    /// The version of the NGC charts (default: the Dynamo version).
    pub chart_version: Option<String>,
    /// A Helm 3 binary to install the charts with (default: the suite builds its own).
    pub helm: Option<PathBuf>,
    /// The `dynamo-crds` chart: a `.tgz`, a chart directory or an `oci://` reference.
    pub crds_chart: Option<String>,
    /// The `dynamo-platform` chart: a `.tgz`, a chart directory or an `oci://` reference.
    pub platform_chart: Option<String>,
    /// A directory holding both charts as `helm pull` names them (`dynamo-crds-<version>.tgz`).
    pub charts_dir: Option<PathBuf>,
    /// A Helm values file for the platform chart (helm `--values`); its keys win over the suite's.
    pub platform_values: Option<PathBuf>,
    /// Fit the graph's CPU and memory requests to the GPU nodes (a deviation from the guide,
    /// recorded in the report); the kind provider's simulated path always does.
    pub fit_requests: Option<bool>,
    /// `auto`, `real` or `simulated` GPUs (kind: which path; existing: `simulated` declares the
    /// cluster's GPUs advertised capacity, not hardware).
    pub gpus: Option<String>,
    /// Provider `kind`, real GPUs: the NVIDIA GPU operator chart version.
    pub gpu_operator_version: Option<String>,
    /// `false`: apply no stage and wait for nothing; judge the cluster as it stands (reproducing
    /// a field issue on a cluster as found).
    pub apply: Option<bool>,
}

impl ConfigLayer {
    /// The layer set by `DYNAMO_CONFORMANCE_*` variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(format!("{ENV_PREFIX}{key}")).ok())
    }

    /// The layer a lookup of variable names (without prefix) yields.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let secs = |key: &'static str| -> Result<Option<u64>, ConfigError> {
            lookup(key)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| ConfigError::Invalid {
                        key,
                        value: v.clone(),
                        expected: "a whole number of seconds",
                    })
                })
                .transpose()
        };
        let flag = |key: &str, name: &'static str| -> Result<Option<bool>, ConfigError> {
            lookup(key)
                .map(|v| match v.trim() {
                    "true" | "1" | "yes" => Ok(true),
                    "false" | "0" | "no" => Ok(false),
                    _ => Err(ConfigError::Invalid {
                        key: name,
                        value: v.clone(),
                        expected: "true or false",
                    }),
                })
                .transpose()
        };
        Ok(ConfigLayer {
            provider: lookup("PROVIDER"),
            dynamo_version: lookup("DYNAMO_VERSION"),
            workers_version: lookup("WORKERS_VERSION"),
            model: lookup("MODEL"),
            namespace: lookup("NAMESPACE"),
            cache_dir: lookup("CACHE_DIR").map(PathBuf::from),
            report_dir: lookup("REPORT_DIR").map(PathBuf::from),
            request_timeout_secs: secs("REQUEST_TIMEOUT_SECS")?,
            stream_idle_secs: secs("STREAM_IDLE_SECS")?,
            stream_deadline_secs: secs("STREAM_DEADLINE_SECS")?,
            ready_timeout_secs: secs("READY_TIMEOUT_SECS")?,
            kubeconfig: lookup("KUBECONFIG").map(PathBuf::from),
            context: lookup("CONTEXT"),
            hf_token_file: lookup("HF_TOKEN_FILE").map(PathBuf::from),
            provisioner_manifest: lookup("PROVISIONER_MANIFEST").map(PathBuf::from),
            chart_version: lookup("CHART_VERSION"),
            helm: lookup("HELM").map(PathBuf::from),
            crds_chart: lookup("CRDS_CHART"),
            platform_chart: lookup("PLATFORM_CHART"),
            charts_dir: lookup("CHARTS_DIR").map(PathBuf::from),
            platform_values: lookup("PLATFORM_VALUES").map(PathBuf::from),
            fit_requests: flag("FIT_REQUESTS", "fit_requests")?,
            gpus: lookup("GPUS"),
            gpu_operator_version: lookup("GPU_OPERATOR_VERSION"),
            apply: flag("APPLY", "apply")?,
        })
    }

    /// The layer a YAML file sets.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_yaml(&text).map_err(|reason| ConfigError::InvalidFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The layer a YAML document sets.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(ConfigLayer::default());
        }
        serde_saphyr::from_str(text)
            .map_err(|e| e.to_string().lines().next().unwrap_or_default().to_string())
    }

    /// This layer, with unset fields taken from `lower`.
    #[must_use]
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            provider: self.provider.or(lower.provider),
            dynamo_version: self.dynamo_version.or(lower.dynamo_version),
            workers_version: self.workers_version.or(lower.workers_version),
            model: self.model.or(lower.model),
            namespace: self.namespace.or(lower.namespace),
            cache_dir: self.cache_dir.or(lower.cache_dir),
            report_dir: self.report_dir.or(lower.report_dir),
            request_timeout_secs: self.request_timeout_secs.or(lower.request_timeout_secs),
            stream_idle_secs: self.stream_idle_secs.or(lower.stream_idle_secs),
            stream_deadline_secs: self.stream_deadline_secs.or(lower.stream_deadline_secs),
            ready_timeout_secs: self.ready_timeout_secs.or(lower.ready_timeout_secs),
            kubeconfig: self.kubeconfig.or(lower.kubeconfig),
            context: self.context.or(lower.context),
            hf_token_file: self.hf_token_file.or(lower.hf_token_file),
            provisioner_manifest: self.provisioner_manifest.or(lower.provisioner_manifest),
            chart_version: self.chart_version.or(lower.chart_version),
            helm: self.helm.or(lower.helm),
            crds_chart: self.crds_chart.or(lower.crds_chart),
            platform_chart: self.platform_chart.or(lower.platform_chart),
            charts_dir: self.charts_dir.or(lower.charts_dir),
            platform_values: self.platform_values.or(lower.platform_values),
            fit_requests: self.fit_requests.or(lower.fit_requests),
            gpus: self.gpus.or(lower.gpus),
            gpu_operator_version: self.gpu_operator_version.or(lower.gpu_operator_version),
            apply: self.apply.or(lower.apply),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the cluster comes from.
    pub provider: ProviderKind,
    /// The Dynamo release under test.
    pub dynamo_version: DynamoVersion,
    /// The workers' release when it is not the frontend's (version skew); `None`: the same.
    pub workers_version: Option<DynamoVersion>,
    /// The model the graph serves.
    pub model: String,
    /// The namespace of the platform and the graph.
    pub namespace: String,
    /// Where installed tools and generated models are cached.
    pub cache_dir: PathBuf,
    /// Where reports and evidence are written.
    pub report_dir: PathBuf,
    /// Bounds on API exchanges.
    pub api_timeouts: ApiTimeouts,
    /// How long a deployment may take to become ready.
    pub ready_timeout: Duration,
    /// The kubeconfig of an existing cluster, if named.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context, if named.
    pub context: Option<String>,
    /// A file holding the Hugging Face token, if named.
    pub hf_token_file: Option<PathBuf>,
    /// A local copy of the provisioner manifest, if named.
    pub provisioner_manifest: Option<PathBuf>,
    /// The NGC chart version, if not the Dynamo version.
    pub chart_version: Option<String>,
    /// A Helm binary the user named, if any ([`crate::helm::resolve`]).
    pub helm: Option<PathBuf>,
    /// The `dynamo-crds` chart, if given ([`crate::stages::chart`]).
    pub crds_chart: Option<String>,
    /// The `dynamo-platform` chart, if given.
    pub platform_chart: Option<String>,
    /// A directory holding both charts, if given.
    pub charts_dir: Option<PathBuf>,
    /// The platform chart's values file, if given ([`crate::stages::chart::platform_values`]).
    pub platform_values: Option<PathBuf>,
    /// Whether the graph's requests are fitted to the GPU nodes on any provider
    /// ([`crate::stages::graph::fit_to_gpu_nodes`]).
    pub fit_requests: bool,
    /// Real or simulated GPUs (kind: the path taken; existing: `Simulated` is declared by the user).
    pub gpus: GpuMode,
    /// Provider `kind`, real GPUs: the NVIDIA GPU operator chart version.
    pub gpu_operator_version: String,
    /// Whether the stages are applied (else the cluster is judged as it stands).
    pub apply: bool,
}

impl Config {
    /// The version of the guide's Helm charts: as configured, else the Dynamo version.
    pub fn chart_version(&self) -> String {
        self.chart_version
            .clone()
            .unwrap_or_else(|| self.dynamo_version.to_string())
    }

    /// The workers' release: [`Config::workers_version`], else the frontend's.
    pub fn workers_release(&self) -> DynamoVersion {
        self.workers_version.unwrap_or(self.dynamo_version)
    }
}

impl Config {
    /// Resolves `flags` over the environment over the configuration file.
    /// The file is `flags_file`, else `$DYNAMO_CONFORMANCE_CONFIG`, else none.
    pub fn load(flags: ConfigLayer, flags_file: Option<&Path>) -> Result<Config, ConfigError> {
        let env = ConfigLayer::from_env()?;
        let file_path = flags_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from));
        let file = match file_path {
            Some(path) => ConfigLayer::from_file(&path)?,
            None => ConfigLayer::default(),
        };
        Config::resolve(flags.over(env).over(file))
    }

    /// Fills the defaults into a merged layer and checks every value.
    pub fn resolve(layer: ConfigLayer) -> Result<Config, ConfigError> {
        let provider = layer.provider.as_deref().unwrap_or("local").parse()?;
        let dynamo_version = match layer.dynamo_version.as_deref() {
            Some(version) => version.parse()?,
            None => DynamoVersion::guide(),
        };
        let workers_version = match layer.workers_version.as_deref() {
            Some(version) => Some(version.parse::<DynamoVersion>()?),
            None => None,
        }
        .filter(|w| *w != dynamo_version);
        if let Some(workers) = workers_version {
            dynamo_version.same_planes(workers)?;
        }
        let model = layer.model.unwrap_or_else(|| GUIDE_MODEL.to_string());
        if model.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "model",
                value: model,
                expected: "a model name",
            });
        }
        let defaults = ApiTimeouts::default();
        let secs =
            |v: Option<u64>, default: Duration| v.map(Duration::from_secs).unwrap_or(default);
        let api_timeouts = ApiTimeouts {
            connect: defaults.connect,
            request: secs(layer.request_timeout_secs, defaults.request),
            stream_idle: secs(layer.stream_idle_secs, defaults.stream_idle),
            stream_deadline: secs(layer.stream_deadline_secs, defaults.stream_deadline),
        };
        for (key, value) in [
            ("request_timeout_secs", api_timeouts.request),
            ("stream_idle_secs", api_timeouts.stream_idle),
            ("stream_deadline_secs", api_timeouts.stream_deadline),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    key,
                    value: "0".into(),
                    expected: "at least one second",
                });
            }
        }
        Ok(Config {
            provider,
            dynamo_version,
            workers_version,
            model,
            namespace: layer
                .namespace
                .unwrap_or_else(|| GUIDE_NAMESPACE.to_string()),
            cache_dir: layer.cache_dir.unwrap_or_else(default_cache_dir),
            report_dir: layer
                .report_dir
                .unwrap_or_else(|| PathBuf::from("dynamo-conformance-report")),
            api_timeouts,
            ready_timeout: secs(layer.ready_timeout_secs, Duration::from_secs(600)),
            kubeconfig: layer.kubeconfig,
            context: layer.context,
            hf_token_file: layer.hf_token_file,
            provisioner_manifest: layer.provisioner_manifest,
            chart_version: layer.chart_version,
            helm: layer.helm,
            crds_chart: layer.crds_chart,
            platform_chart: layer.platform_chart,
            charts_dir: layer.charts_dir,
            platform_values: layer.platform_values,
            fit_requests: layer.fit_requests.unwrap_or(false),
            gpus: layer.gpus.as_deref().unwrap_or("auto").parse()?,
            gpu_operator_version: layer
                .gpu_operator_version
                .unwrap_or_else(|| GPU_OPERATOR_VERSION.to_string()),
            apply: layer.apply.unwrap_or(true),
        })
    }
}

/// `$XDG_CACHE_HOME/dynamo-conformance`, else `~/.cache/dynamo-conformance`.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("dynamo-conformance")
}

/// Errors in the configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A setting has a value the suite cannot use.
    #[error("invalid {key} '{value}': expected {expected}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// The profile is unknown.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The Dynamo version is not one the suite can judge.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The configuration file cannot be read.
    #[error("cannot read the configuration file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration file is not valid YAML of the expected shape.
    #[error("invalid configuration file {path}: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> ConfigLayer {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConfigLayer::from_lookup(|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn defaults_follow_the_guide() {
        let config = Config::resolve(ConfigLayer::default()).unwrap();
        assert_eq!(config.dynamo_version, DynamoVersion::guide());
        assert_eq!(config.model, "Qwen/Qwen3-0.6B");
        assert_eq!(config.namespace, "dynamo-cloud");
        assert_eq!(config.provider, ProviderKind::Local);
        assert_eq!(config.api_timeouts.stream_idle, Duration::from_secs(30));
    }

    #[test]
    fn flags_beat_env_and_env_beats_the_file() {
        let file =
            ConfigLayer::from_yaml("model: from-file\nnamespace: file-ns\nstream_idle_secs: 7\n")
                .unwrap();
        let env = env(&[("MODEL", "from-env"), ("NAMESPACE", "env-ns")]);
        let flags = ConfigLayer {
            model: Some("from-flag".into()),
            ..ConfigLayer::default()
        };
        let config = Config::resolve(flags.over(env).over(file)).unwrap();
        assert_eq!(config.model, "from-flag");
        assert_eq!(config.namespace, "env-ns");
        assert_eq!(config.api_timeouts.stream_idle, Duration::from_secs(7));
    }

    #[rstest]
    #[case("dynamo_version: latest\n", "'latest' is not a Dynamo release number")]
    #[case("dynamo_version: 0.3.2\n", "Dynamo 0.3.2 is older than 0.4.1")]
    #[case("provider: minikube\n", "invalid provider 'minikube'")]
    #[case(
        "dynamo_version: 1.6.1\nworkers_version: 1.0.2\n",
        "Dynamo 1.0.2's workers cannot serve beside Dynamo 1.6.1's frontend: 1.0.2 runs on etcd and NATS"
    )]
    #[case("workers_version: 1.x\n", "'1.x' is not a Dynamo release number")]
    #[case("stream_idle_secs: 0\n", "invalid stream_idle_secs '0'")]
    fn bad_values_are_named(#[case] yaml: &str, #[case] message: &str) {
        let err = Config::resolve(ConfigLayer::from_yaml(yaml).unwrap()).unwrap_err();
        assert!(err.to_string().starts_with(message), "{err}");
    }

    #[test]
    fn workers_of_a_neighbouring_release_on_the_same_planes_are_a_skew() {
        let layer = |yaml: &str| Config::resolve(ConfigLayer::from_yaml(yaml).unwrap()).unwrap();
        let skewed = layer("dynamo_version: 1.6.1\nworkers_version: 1.5.1\n");
        assert_eq!(skewed.workers_version.unwrap().to_string(), "1.5.1");
        assert_eq!(skewed.workers_release().to_string(), "1.5.1");
        let same = layer("dynamo_version: 1.6.1\nworkers_version: 1.6.1\n");
        assert_eq!(same.workers_version, None);
        assert_eq!(same.workers_release(), same.dynamo_version);
    }

    #[rstest]
    #[case("model: [unclosed\n")]
    #[case("no_such_setting: 1\n")]
    #[case("stream_idle_secs: soon\n")]
    fn invalid_yaml_is_one_line(#[case] yaml: &str) {
        let reason = ConfigLayer::from_yaml(yaml).unwrap_err();
        assert!(!reason.is_empty() && !reason.contains('\n'), "{reason:?}");
    }

    #[test]
    fn a_non_numeric_env_timeout_is_rejected() {
        let err = ConfigLayer::from_lookup(|k| (k == "STREAM_IDLE_SECS").then(|| "x".to_string()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid STREAM_IDLE_SECS 'x': expected a whole number of seconds"
        );
    }

    #[test]
    fn a_missing_file_is_reported_with_its_path() {
        let err = ConfigLayer::from_file(Path::new("/nonexistent/conformance.yaml")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the configuration file /nonexistent/conformance.yaml")
        );
    }
}
