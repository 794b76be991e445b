//! Helm, one for every provider: the suite's own build from the Go module proxy, or one the user names.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use crate::command::{self, Bounds};
use crate::gobuild::{self, GoProgram};

/// The Helm release the suite builds and installs the guide's charts with.
pub const VERSION: &str = "v3.19.0";

/// The oldest Helm 3 minor the suite accepts from `--helm`: 3.8 made OCI registries generally
/// available (`helm install … oci://…`), which air-gapped chart mirrors use.
pub const OLDEST_MINOR: u64 = 8;

/// The suite's Helm: `helm.sh/helm/v3/cmd/helm` at [`VERSION`] through the pinned wrapper
/// module in `fixtures/helm/`.
pub static PROGRAM: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "helm",
    title: "Helm v3.19.0",
    files: &[
        ("go.mod", include_str!("../../fixtures/helm/go.mod")),
        ("go.sum", include_str!("../../fixtures/helm/go.sum")),
        ("tools.go", include_str!("../../fixtures/helm/tools.go")),
    ],
    packages: &["helm.sh/helm/v3/cmd/helm"],
    outputs: &["helm"],
    ldflags: format!("-s -w -X helm.sh/helm/v3/internal/version.version={VERSION}"),
});

/// Where the Helm in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The suite built it ([`PROGRAM`]).
    Built,
    /// The user named it (`--helm`, `helm` in the configuration file, `DYNAMO_CONFORMANCE_HELM`).
    Named,
}

/// A Helm binary, its version checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Helm {
    /// The binary.
    pub path: PathBuf,
    /// `helm version`'s answer, e.g. `v3.19.0`.
    pub version: String,
    /// Where it came from.
    pub origin: Origin,
}

impl Helm {
    /// One phrase for reports, e.g. `Helm v3.19.0 (the suite's build, /…/helm)`.
    pub fn describe(&self) -> String {
        let origin = match self.origin {
            Origin::Built => "the suite's build from the Go module proxy",
            Origin::Named => "named by --helm",
        };
        format!("Helm {} ({origin}, {})", self.version, self.path.display())
    }
}

/// Errors finding or building Helm.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The named binary cannot be run.
    #[error(
        "cannot run the Helm named by --helm ({path}): {reason}; name a Helm 3 binary, or leave --helm out and the suite builds its own"
    )]
    Unusable {
        /// The binary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The named binary is not a supported Helm.
    #[error(
        "the Helm named by --helm ({path}) is {version}; the suite needs Helm 3.{OLDEST_MINOR} or newer (OCI charts), or leave --helm out and the suite builds its own"
    )]
    Unsupported {
        /// The binary.
        path: PathBuf,
        /// What it said its version is.
        version: String,
    },
    /// The suite's own Helm could not be built.
    #[error("cannot build the suite's Helm: {0}")]
    Build(#[from] gobuild::GoError),
}

/// The Helm to use: `named` when given (checked for a supported version), else the suite's
/// own, built once per machine under `cache_dir/go/` (about 2 minutes the first time).
pub fn resolve(named: Option<&Path>, cache_dir: &Path) -> Result<Helm, HelmError> {
    match named {
        Some(path) => check(path),
        None => {
            let bin = gobuild::build(cache_dir, &PROGRAM, "[helm]")?;
            Ok(ours(bin.join("helm")))
        }
    }
}

/// The suite's Helm if this machine has built it, without building it.
pub fn built(cache_dir: &Path) -> Option<Helm> {
    let path = PROGRAM.output(cache_dir, "helm");
    (PROGRAM.bin_dir(cache_dir).join(".built").exists() && path.is_file()).then(|| ours(path))
}

fn ours(path: PathBuf) -> Helm {
    Helm {
        path,
        version: VERSION.into(),
        origin: Origin::Built,
    }
}

/// Runs `path version` and accepts Helm 3.[`OLDEST_MINOR`] or newer.
pub fn check(path: &Path) -> Result<Helm, HelmError> {
    let unusable = |reason: String| HelmError::Unusable {
        path: path.to_path_buf(),
        reason,
    };
    let mut version = std::process::Command::new(path);
    version.args(["version", "--template", "{{.Version}}"]);
    let answer = command::run(
        &mut version,
        &format!("{} version", path.display()),
        Bounds::within(Duration::from_secs(30)),
    )
    .map_err(|e| unusable(e.detail))?
    .trim()
    .to_string();
    match supported(&answer) {
        Some(true) => Ok(Helm {
            path: path.to_path_buf(),
            version: answer,
            origin: Origin::Named,
        }),
        Some(false) => Err(HelmError::Unsupported {
            path: path.to_path_buf(),
            version: answer,
        }),
        None => Err(unusable(format!(
            "`version` answered {answer:?}, not a Helm version"
        ))),
    }
}

/// Whether `version` (`v3.19.0`) is a Helm the suite accepts; `None` if it is no version at all.
fn supported(version: &str) -> Option<bool> {
    let mut parts = version.strip_prefix('v')?.split(['.', '+', '-']);
    let major: u64 = parts.next()?.parse().ok()?;
    let minor: u64 = parts.next()?.parse().ok()?;
    Some(major == 3 && minor >= OLDEST_MINOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_3_8_and_newer_3_releases_are_supported() {
        assert_eq!(supported("v3.19.0"), Some(true));
        assert_eq!(supported("v3.8.0"), Some(true));
        assert_eq!(supported("v3.7.2"), Some(false));
        assert_eq!(supported("v2.17.0"), Some(false));
        assert_eq!(supported("v4.0.0"), Some(false));
        assert_eq!(supported("v3.12.3+g3a31588"), Some(true));
        assert_eq!(supported("oops"), None);
        assert_eq!(supported(""), None);
    }

    #[test]
    fn a_named_binary_that_is_no_helm_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("helm");
        std::fs::write(&fake, "#!/bin/sh\necho v2.17.0\n").unwrap();
        let mut permissions = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&fake, permissions).unwrap();
        let refused = check(&fake).unwrap_err().to_string();
        assert!(refused.contains("is v2.17.0"), "{refused}");
        assert!(refused.contains("Helm 3.8 or newer"), "{refused}");
        let missing = check(&dir.path().join("absent")).unwrap_err().to_string();
        assert!(
            missing.starts_with("cannot run the Helm named by --helm"),
            "{missing}"
        );
    }
}
