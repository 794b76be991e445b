//! The guide's two charts and where each is installed from: NGC, a file, a directory, OCI, or the project's stand-in.

use std::path::{Path, PathBuf};

use super::StageError;
use crate::config::Config;

/// Where the guide downloads its charts from (`helm install … <NGC_CHARTS>/dynamo-crds-0.4.1.tgz`).
pub const NGC_CHARTS: &str = "https://helm.ngc.nvidia.com/nvidia/ai-dynamo/charts";

/// One of the guide's charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    /// `dynamo-crds`.
    Crds,
    /// `dynamo-platform`.
    Platform,
}

impl Chart {
    /// The chart's (and the guide's release's) name.
    pub fn name(self) -> &'static str {
        match self {
            Chart::Crds => "dynamo-crds",
            Chart::Platform => "dynamo-platform",
        }
    }

    /// The flag that names it.
    pub fn flag(self) -> &'static str {
        match self {
            Chart::Crds => "--crds-chart",
            Chart::Platform => "--platform-chart",
        }
    }

    /// The project's stand-in for it.
    pub fn stand_in(self) -> &'static LocalChart {
        match self {
            Chart::Crds => &CRDS_CHART,
            Chart::Platform => &PLATFORM_CHART,
        }
    }

    /// The file name `helm pull` gives version `version` of it, e.g. `dynamo-crds-0.4.1.tgz`.
    pub fn archive(self, version: &str) -> String {
        format!("{}-{version}.tgz", self.name())
    }
}

/// Where a chart is installed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// NGC's URL, as the guide gives it.
    Ngc(String),
    /// A `.tgz` or a chart directory on this machine.
    Path(PathBuf),
    /// An OCI reference; `version` is passed as `--version` when the reference has no tag.
    Oci {
        /// The reference, `oci://registry/repository/chart[:tag]`.
        reference: String,
        /// The chart version to ask for.
        version: Option<String>,
    },
    /// The project's stand-in, written under the cache (offline providers).
    StandIn(PathBuf),
}

impl Source {
    /// The chart argument of `helm install` and the flags after it.
    pub fn helm_args(&self) -> Vec<String> {
        match self {
            Source::Ngc(url) => vec![url.clone()],
            Source::Path(path) | Source::StandIn(path) => vec![path.display().to_string()],
            Source::Oci { reference, version } => {
                let mut args = vec![reference.clone()];
                if let Some(version) = version {
                    args.extend(["--version".into(), version.clone()]);
                }
                args
            }
        }
    }

    /// Where it came from, for reports.
    pub fn describe(&self) -> String {
        match self {
            Source::Ngc(url) => url.clone(),
            Source::Path(path) => format!("{} (given)", path.display()),
            Source::Oci {
                reference,
                version: Some(v),
            } => format!("{reference} version {v}"),
            Source::Oci { reference, .. } => reference.clone(),
            Source::StandIn(path) => format!("{} (the project's stand-in)", path.display()),
        }
    }

    /// What to do when it cannot be fetched: for NGC's URL, how to give the chart as a file.
    pub fn hint(&self) -> &'static str {
        match self {
            Source::Ngc(_) => {
                "; without access to NGC, give the charts as files: --charts-dir DIR, or --crds-chart and --platform-chart"
            }
            _ => "",
        }
    }

    /// Whether it is the project's stand-in, shaped by the suite's `--set` values.
    pub fn is_stand_in(&self) -> bool {
        matches!(self, Source::StandIn(_))
    }
}

/// Errors finding a chart the user named.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChartError {
    /// A named chart file or directory does not exist.
    #[error(
        "{flag} {path}: no such file or directory; give a .tgz, a chart directory or an oci:// reference"
    )]
    Missing {
        /// The flag that named it.
        flag: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// The charts directory does not hold the chart.
    #[error(
        "--charts-dir {dir} holds no {chart} chart for version {version} (looked for {archive} and {chart}/Chart.yaml){found}"
    )]
    NotInDir {
        /// The directory.
        dir: PathBuf,
        /// The chart's name.
        chart: &'static str,
        /// The chart version looked for.
        version: String,
        /// The archive name looked for.
        archive: String,
        /// What the directory holds of that chart instead, as `; it holds …`.
        found: String,
    },
    /// The platform's values file cannot be read or is not a mapping.
    #[error("--platform-values {path}: {reason}")]
    Values {
        /// The file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Where `chart` comes from for this run: `--crds-chart`/`--platform-chart`, else
/// `--charts-dir`, else the project's stand-in when `offline` (NGC unreachable), else NGC.
pub fn source(chart: Chart, config: &Config, offline: bool) -> Result<Source, ChartError> {
    let version = config.chart_version();
    let named = match chart {
        Chart::Crds => config.crds_chart.as_deref(),
        Chart::Platform => config.platform_chart.as_deref(),
    };
    if let Some(named) = named {
        if named.starts_with("oci://") {
            let tagged = named
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':') || last.contains('@'));
            return Ok(Source::Oci {
                reference: named.to_string(),
                version: (!tagged).then_some(version),
            });
        }
        let path = PathBuf::from(named);
        return if path.exists() {
            Ok(Source::Path(path))
        } else {
            Err(ChartError::Missing {
                flag: chart.flag(),
                path,
            })
        };
    }
    if let Some(dir) = &config.charts_dir {
        return in_dir(chart, dir, &version).map(Source::Path);
    }
    if offline {
        return Ok(Source::StandIn(
            chart.stand_in().directory(&config.cache_dir),
        ));
    }
    Ok(Source::Ngc(format!(
        "{NGC_CHARTS}/{}",
        chart.archive(&version)
    )))
}

/// Every chart source of the run and the platform's values file, checked before anything is
/// applied.
pub fn check(config: &Config, offline: bool) -> Result<(), ChartError> {
    for chart in [Chart::Crds, Chart::Platform] {
        source(chart, config, offline)?;
    }
    platform_values(config)?;
    Ok(())
}

/// A Helm values file the user gives the platform chart (`--platform-values`, helm `--values`):
/// an air-gapped cluster's image mirror, or the settings a chart given as a file needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// The file, passed to Helm as it is.
    pub path: PathBuf,
    tree: serde_json::Value,
}

impl Values {
    /// Whether the file sets the dotted key `key` (`a.b.c`, as `--set` names it); the suite's
    /// own `--set` of such a key is dropped, so the file wins.
    pub fn sets(&self, key: &str) -> bool {
        key.split('.')
            .try_fold(&self.tree, |node, part| node.as_object()?.get(part))
            .is_some()
    }

    /// `sets` (`key=value`, as `--set` takes them) without those whose key the file sets.
    #[must_use]
    pub fn leave_to_file(&self, mut sets: Vec<String>) -> Vec<String> {
        sets.retain(|set| !set.split_once('=').is_some_and(|(key, _)| self.sets(key)));
        sets
    }
}

/// The platform's values file, read and checked: a YAML mapping.
///
/// # Errors
/// [`ChartError::Values`] when it cannot be read or is not a mapping.
pub fn platform_values(config: &Config) -> Result<Option<Values>, ChartError> {
    let Some(path) = &config.platform_values else {
        return Ok(None);
    };
    let bad = |reason: String| ChartError::Values {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let tree: serde_json::Value = if text.trim().is_empty() {
        serde_json::json!({})
    } else {
        serde_saphyr::from_str(&text)
            .map_err(|e| bad(e.to_string().lines().next().unwrap_or_default().to_string()))?
    };
    if !tree.is_object() {
        return Err(bad("not a YAML mapping of chart values".into()));
    }
    Ok(Some(Values {
        path: path.clone(),
        tree,
    }))
}

fn in_dir(chart: Chart, dir: &Path, version: &str) -> Result<PathBuf, ChartError> {
    let archive = dir.join(chart.archive(version));
    if archive.is_file() {
        return Ok(archive);
    }
    let unpacked = dir.join(chart.name());
    if unpacked.join("Chart.yaml").is_file() {
        return Ok(unpacked);
    }
    let prefix = format!("{}-", chart.name());
    let mut others: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix) && n.ends_with(".tgz"))
        .collect();
    others.sort();
    Err(ChartError::NotInDir {
        dir: dir.to_path_buf(),
        chart: chart.name(),
        version: version.to_string(),
        archive: chart.archive(version),
        found: if others.is_empty() {
            String::new()
        } else {
            format!(
                "; it holds {} (--chart-version names the version)",
                others.join(", ")
            )
        },
    })
}

/// A chart of the project's own, embedded so the binary needs no checkout.
pub struct LocalChart {
    /// The chart's name.
    pub name: &'static str,
    /// Its files, by path inside the chart.
    pub files: &'static [(&'static str, &'static str)],
}

/// The stand-in for `dynamo-crds`.
pub const CRDS_CHART: LocalChart = LocalChart {
    name: "dynamo-crds",
    files: &[
        (
            "Chart.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/Chart.yaml"),
        ),
        (
            "values.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/values.yaml"),
        ),
        (
            "templates/crds.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-crds/templates/crds.yaml"),
        ),
    ],
};

/// The stand-in for `dynamo-platform`.
pub const PLATFORM_CHART: LocalChart = LocalChart {
    name: "dynamo-platform",
    files: &[
        (
            "Chart.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/Chart.yaml"),
        ),
        (
            "values.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/values.yaml"),
        ),
        (
            "templates/platform.yaml",
            include_str!("../../../fixtures/local/charts/dynamo-platform/templates/platform.yaml"),
        ),
    ],
};

impl LocalChart {
    /// Where [`LocalChart::materialize`] writes it: `cache_dir/charts/<name>`.
    pub fn directory(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join("charts").join(self.name)
    }

    /// Writes the chart under [`LocalChart::directory`] and returns that directory.
    pub fn materialize(
        &self,
        cache_dir: &Path,
        stage: &'static str,
    ) -> Result<PathBuf, StageError> {
        let dir = self.directory(cache_dir);
        for (path, text) in self.files {
            let file = dir.join(path);
            let written = file
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&file, text));
            written.map_err(|e| StageError::Input {
                stage,
                reason: format!("cannot write {}: {e}", file.display()),
            })?;
        }
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLayer;

    fn with_values(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("values.yaml");
        std::fs::write(&path, text).unwrap();
        let layer = ConfigLayer {
            platform_values: Some(path),
            ..ConfigLayer::default()
        };
        (dir, Config::load(layer, None).unwrap())
    }

    #[test]
    fn a_values_file_sets_the_dotted_keys_it_holds_and_no_other() {
        let (_dir, config) = with_values(
            "dynamo-operator:\n  controllerManager:\n    manager:\n      image:\n        repository: mirror.local/operator\npersistence:\n  enabled: true\n",
        );
        let values = platform_values(&config).unwrap().unwrap();
        assert!(values.sets("dynamo-operator.controllerManager.manager.image.repository"));
        assert!(values.sets("persistence.enabled"));
        assert!(values.sets("persistence"));
        assert!(!values.sets("dynamo-operator.controllerManager.manager.image.tag"));
        assert!(!values.sets("persistence.enabled.more"));
        assert!(!values.sets("etcd.enabled"));
        let sets = vec![
            "dynamo-operator.controllerManager.manager.image.repository=nvcr.io/x".to_string(),
            "dynamo-operator.controllerManager.manager.image.tag=0.4.1".to_string(),
            "etcd.enabled=true".to_string(),
        ];
        assert_eq!(
            values.leave_to_file(sets),
            [
                "dynamo-operator.controllerManager.manager.image.tag=0.4.1",
                "etcd.enabled=true"
            ]
        );
    }

    #[test]
    fn a_values_file_that_is_no_mapping_is_refused_naming_the_flag() {
        for text in ["- a\n- b\n", "just a string\n", "a: [\n"] {
            let (_dir, config) = with_values(text);
            let err = platform_values(&config).unwrap_err().to_string();
            assert!(err.starts_with("--platform-values "), "{text:?}: {err}");
        }
        let (_dir, config) = with_values("");
        assert!(platform_values(&config).unwrap().is_some());
        let missing = Config::load(
            ConfigLayer {
                platform_values: Some("/nonexistent/values.yaml".into()),
                ..ConfigLayer::default()
            },
            None,
        )
        .unwrap();
        assert!(check(&missing, true).is_err());
    }
}
