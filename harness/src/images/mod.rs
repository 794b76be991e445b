//! Container images the kind provider builds without a registry: a catalog kept as data, built with Docker, cached by content.
//!
//! Each [`Image`] carries a key, a digest of everything that shapes it (its recipe, and the keys
//! of its inputs and base image). A built image is labelled with its key ([`KEY_LABEL`]); an image
//! whose label matches is not built again, so a second run costs one inspection per image.

pub mod catalog;
pub mod programs;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, CreateImageOptions};
use futures::StreamExt;

use crate::command::{self, Bounds};
use crate::docker::DockerError;
use crate::dynamo::install::digest;

/// The label holding an image's content key.
pub const KEY_LABEL: &str = "io.dynamo-conformance.key";
/// The label saying what is real, a stand-in or simulated in an image.
pub const NOTE_LABEL: &str = "io.dynamo-conformance.note";
/// The label marking every image the suite builds (so cleanup can find them).
pub const MANAGED_LABEL: &str = "io.dynamo-conformance.managed";

/// Errors building images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The engine refused a call.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// The release's frontend asks the Hugging Face Hub's API, and the simulated path's pods
    /// have no Hub ([`crate::release::Release::asks_the_hub`]).
    #[error(
        "Dynamo {release}'s frontend asks the Hugging Face Hub's API for every model (seen here with 0.8.1 and 0.9.1) and the kind provider's simulated images have no Hub to ask; run it with --provider local or `dynamo up`, which simulate one"
    )]
    AsksTheHub {
        /// The release.
        release: String,
    },
    /// A build step failed.
    #[error("image {reference}: {step} failed: {detail}")]
    Build {
        /// The image.
        reference: String,
        /// The step, e.g. `Step 3/12 : RUN apt-get …`.
        step: String,
        /// What the engine said.
        detail: String,
    },
    /// A command (debootstrap, tar, strip) failed.
    #[error(transparent)]
    Command(#[from] command::CommandError),
    /// A Go program could not be built.
    #[error(transparent)]
    Go(#[from] crate::gobuild::GoError),
    /// The Kubernetes binaries (shared with the local provider) could not be built.
    #[error(transparent)]
    Kubernetes(#[from] crate::cluster::local::LocalError),
    /// Dynamo's Python environment or the tokenizer could not be set up.
    #[error(transparent)]
    Dynamo(#[from] crate::dynamo::DynamoError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file or directory that goes into an image, and the key of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Where it is on this machine.
    pub path: PathBuf,
    /// Where it goes: a path in the image (`Files`) or in the build context (`Dockerfile`).
    pub dest: String,
    /// What determines its content (a build key, or a digest of the bytes).
    pub key: String,
}

impl Input {
    /// A file whose key is the digest of its bytes.
    pub fn hashed(path: &Path, dest: &str) -> Result<Input, ImageError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Ok(Input {
            path: path.to_path_buf(),
            dest: dest.to_string(),
            key: digest(&[&bytes]),
        })
    }

    /// A file or directory whose content is determined by `key`.
    pub fn keyed(path: &Path, dest: &str, key: &str) -> Input {
        Input {
            path: path.to_path_buf(),
            dest: dest.to_string(),
            key: key.to_string(),
        }
    }
}

/// How an image is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// `debootstrap --variant=minbase <suite>` from Debian's mirror, imported as one layer.
    Rootfs {
        /// The Debian suite, e.g. `bookworm`.
        suite: &'static str,
        /// The mirror.
        mirror: &'static str,
    },
    /// A few files (static binaries) imported as one layer, no base.
    Files {
        /// The files, by their path in the image.
        inputs: Vec<Input>,
        /// Symbolic links to create: (path, target).
        links: Vec<(String, String)>,
        /// `ENTRYPOINT`, if any.
        entrypoint: Option<Vec<String>>,
    },
    /// `docker build` of a Dockerfile from `fixtures/kind/images/<dir>`.
    Dockerfile {
        /// The fixture's files, by path in the build context (`Dockerfile` among them).
        fixture: &'static [(&'static str, &'static str)],
        /// Build arguments.
        args: Vec<(String, String)>,
        /// Files added to the build context.
        inputs: Vec<Input>,
        /// The catalog images it builds `FROM` (their keys are part of its key).
        from: Vec<String>,
    },
}

/// Where an image ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Only used to build other images.
    Build,
    /// Baked into the node image (`/kind/images`), imported by each node before its kubelet starts.
    Node,
    /// The node image itself.
    NodeImage,
    /// Loaded into the cluster's nodes (`kind load`) when a stage needs it.
    Cluster,
}

/// One image of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its reference, as the manifests name it (`registry.k8s.io/pause:3.10.1`).
    pub reference: String,
    /// How it is made.
    pub recipe: Recipe,
    /// Where it goes.
    pub placement: Placement,
    /// What is real, a stand-in or simulated in it, one line (also its [`NOTE_LABEL`]).
    pub note: String,
}

impl Image {
    /// The content key: the recipe and its inputs' keys, and the keys of `known` base images.
    pub fn key(&self, known: &HashMap<String, String>) -> String {
        let mut parts: Vec<String> = vec![self.reference.clone(), self.note.clone()];
        match &self.recipe {
            Recipe::Rootfs { suite, mirror } => {
                parts.extend(["rootfs".into(), suite.to_string(), mirror.to_string()]);
            }
            Recipe::Files {
                inputs,
                links,
                entrypoint,
            } => {
                parts.push("files".into());
                for input in inputs {
                    parts.extend([input.dest.clone(), input.key.clone()]);
                }
                for (path, target) in links {
                    parts.extend([path.clone(), target.clone()]);
                }
                parts.push(format!("{entrypoint:?}"));
            }
            Recipe::Dockerfile {
                fixture,
                args,
                inputs,
                from,
            } => {
                parts.push("dockerfile".into());
                for (path, text) in *fixture {
                    parts.extend([path.to_string(), text.to_string()]);
                }
                for (k, v) in args {
                    parts.extend([k.clone(), v.clone()]);
                }
                for input in inputs {
                    parts.extend([input.dest.clone(), input.key.clone()]);
                }
                for base in from {
                    parts.push(known.get(base).cloned().unwrap_or_default());
                }
            }
        }
        let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        digest(&bytes)[..16].to_string()
    }
}

/// An image as it stands in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The reference.
    pub reference: String,
    /// The engine's image id (`sha256:…`).
    pub id: String,
    /// Its content key.
    pub key: String,
    /// Whether this run built it.
    pub fresh: bool,
}

/// The key label of `reference` in the engine, and its id, if it exists.
async fn existing(docker: &Docker, reference: &str) -> Option<(String, String)> {
    let inspect = docker.inspect_image(reference).await.ok()?;
    let key = inspect
        .config
        .and_then(|c| c.labels)
        .and_then(|l| l.get(KEY_LABEL).cloned())
        .unwrap_or_default();
    Some((key, inspect.id.unwrap_or_default()))
}

/// Builds every image of `images` whose key differs from the one it carries, in order (bases
/// first). `work` holds temporary build contexts. Progress goes to stderr, one line per image
/// built and per Dockerfile step.
pub async fn ensure(
    docker: &Docker,
    images: &[Image],
    work: &Path,
) -> Result<Vec<Built>, ImageError> {
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut built = Vec::new();
    let total = images.len();
    for (n, image) in images.iter().enumerate() {
        let key = image.key(&keys);
        keys.insert(image.reference.clone(), key.clone());
        let before = existing(docker, &image.reference).await;
        if let Some((have, id)) = &before
            && *have == key
        {
            built.push(Built {
                reference: image.reference.clone(),
                id: id.clone(),
                key,
                fresh: false,
            });
            continue;
        }
        let step = format!("[image {}/{total}]", n + 1);
        eprintln!(
            "dynamo-conformance: {step} building {} ({})",
            image.reference, image.note
        );
        let started = Instant::now();
        std::fs::create_dir_all(work).map_err(io(work))?;
        build(docker, image, &key, work, &step).await?;
        let (_, id) =
            existing(docker, &image.reference)
                .await
                .ok_or_else(|| ImageError::Build {
                    reference: image.reference.clone(),
                    step: "inspect".into(),
                    detail: "the image is missing after its build".into(),
                })?;
        eprintln!(
            "dynamo-conformance: {step} built {} in {}",
            image.reference,
            command::minutes(started.elapsed())
        );
        if let Some((_, superseded)) = before
            && superseded != id
        {
            remove_superseded(docker, &superseded).await;
        }
        built.push(Built {
            reference: image.reference.clone(),
            id,
            key,
            fresh: true,
        });
    }
    if built.iter().any(|b| b.fresh) {
        prune_dangling(docker).await;
    }
    Ok(built)
}

/// Removes the untagged images the suite built ([`MANAGED_LABEL`]) that no container uses:
/// what earlier rebuilds left behind. Nothing without the label is touched.
async fn prune_dangling(docker: &Docker) {
    let filters = HashMap::from([
        ("dangling".to_string(), vec!["true".to_string()]),
        ("label".to_string(), vec![MANAGED_LABEL.to_string()]),
    ]);
    let options = bollard::query_parameters::PruneImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    if let Ok(pruned) = docker.prune_images(Some(options)).await
        && let Some(bytes) = pruned.space_reclaimed.filter(|b| *b > 0)
    {
        eprintln!(
            "dynamo-conformance: removed {} untagged images of earlier builds ({})",
            pruned.images_deleted.map_or(0, |d| d.len()),
            crate::disk::gb(u64::try_from(bytes).unwrap_or_default())
        );
    }
}

/// Removes the image a rebuild untagged, if the suite built it ([`MANAGED_LABEL`]) and nothing
/// else uses it (no force: a container or another tag keeps it), so that rebuilds (the operator
/// stand-in, whose binary changes with every build of this program) do not fill the disk.
async fn remove_superseded(docker: &Docker, id: &str) {
    let managed = docker
        .inspect_image(id)
        .await
        .ok()
        .and_then(|i| i.config)
        .and_then(|c| c.labels)
        .is_some_and(|l| l.contains_key(MANAGED_LABEL));
    if managed {
        let _ = docker
            .remove_image(
                id,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }
}

fn labels(image: &Image, key: &str) -> Vec<(String, String)> {
    vec![
        (KEY_LABEL.into(), key.into()),
        (NOTE_LABEL.into(), image.note.clone()),
        (MANAGED_LABEL.into(), "true".into()),
    ]
}

async fn build(
    docker: &Docker,
    image: &Image,
    key: &str,
    work: &Path,
    step: &str,
) -> Result<(), ImageError> {
    let tarball = work.join(format!("{key}.tar"));
    let result = match &image.recipe {
        Recipe::Rootfs { suite, mirror } => {
            let root = work.join(format!("{key}.rootfs"));
            let (suite, mirror) = (suite.to_string(), mirror.to_string());
            let (r, t) = (root.clone(), tarball.clone());
            tokio::task::spawn_blocking(move || debootstrap(&r, &suite, &mirror, &t))
                .await
                .expect("debootstrap does not panic")?;
            let _ = std::fs::remove_dir_all(&root);
            import(docker, image, key, &tarball, None).await
        }
        Recipe::Files {
            inputs,
            links,
            entrypoint,
        } => {
            let (inputs, links, t) = (inputs.clone(), links.clone(), tarball.clone());
            tokio::task::spawn_blocking(move || files_tar(&t, &inputs, &links))
                .await
                .expect("writing a tar does not panic")?;
            import(docker, image, key, &tarball, entrypoint.as_deref()).await
        }
        Recipe::Dockerfile {
            fixture,
            args,
            inputs,
            ..
        } => {
            let (fixture, inputs, t) = (*fixture, inputs.clone(), tarball.clone());
            tokio::task::spawn_blocking(move || context_tar(&t, fixture, &inputs))
                .await
                .expect("writing a tar does not panic")?;
            docker_build(docker, image, key, &tarball, args, step).await
        }
    };
    let _ = std::fs::remove_file(&tarball);
    result
}

/// A minimal Debian root file system in `root`, packed into `tarball` (apt's lists and caches
/// left out, `/dev` left to the engine).
fn debootstrap(root: &Path, suite: &str, mirror: &str, tarball: &Path) -> Result<(), ImageError> {
    let tool = crate::debian::ensure(
        &[crate::debian::Package {
            program: "debootstrap",
            package: "debootstrap",
        }],
        root.parent().unwrap_or(root),
        "the kind provider's base image",
    )
    .map_err(|e| command::CommandError {
        what: "find debootstrap".into(),
        detail: e.to_string(),
    })?;
    let _ = std::fs::remove_dir_all(root);
    command::run(
        std::process::Command::new(&tool[0])
            .args(["--variant=minbase", suite])
            .arg(root)
            .arg(mirror),
        &format!("debootstrap Debian {suite} from {mirror}"),
        Bounds::long(),
    )?;
    command::run(
        std::process::Command::new("tar")
            .arg("-C")
            .arg(root)
            .args([
                "--exclude=./dev/*",
                "--exclude=./var/cache/apt/archives/*.deb",
                "--exclude=./var/lib/apt/lists/*",
                "-cf",
            ])
            .arg(tarball)
            .arg("."),
        "pack the Debian root file system",
        Bounds::long(),
    )?;
    Ok(())
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(mode);
    header.set_entry_type(kind);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A tar of `inputs` at their paths (directories recursively), `links`, and a world-writable `/tmp`.
fn files_tar(
    tarball: &Path,
    inputs: &[Input],
    links: &[(String, String)],
) -> Result<(), ImageError> {
    let file = std::fs::File::create(tarball).map_err(io(tarball))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(true);
    let mut tmp = header(0, 0o1777, tar::EntryType::Directory);
    tar.append_data(&mut tmp, "tmp/", std::io::empty())
        .map_err(io(tarball))?;
    for input in inputs {
        append(&mut tar, input, 0o755).map_err(io(&input.path))?;
    }
    for (path, target) in links {
        let mut link = header(0, 0o777, tar::EntryType::Symlink);
        tar.append_link(&mut link, path.trim_start_matches('/'), target)
            .map_err(io(tarball))?;
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io(tarball))?;
    Ok(())
}

/// A build context: the fixture's files, then the inputs.
fn context_tar(
    tarball: &Path,
    fixture: &[(&str, &str)],
    inputs: &[Input],
) -> Result<(), ImageError> {
    let file = std::fs::File::create(tarball).map_err(io(tarball))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    tar.follow_symlinks(true);
    for (path, text) in fixture {
        let mut h = header(text.len() as u64, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, path, text.as_bytes())
            .map_err(io(tarball))?;
    }
    for input in inputs {
        append(&mut tar, input, 0o644).map_err(io(&input.path))?;
    }
    tar.into_inner()
        .and_then(|mut w| std::io::Write::flush(&mut w))
        .map_err(io(tarball))?;
    Ok(())
}

/// Appends a file (with `mode`) or a directory tree (modes kept) at `input.dest`.
fn append<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    input: &Input,
    mode: u32,
) -> std::io::Result<()> {
    let dest = input.dest.trim_start_matches('/');
    if input.path.is_dir() {
        return tar.append_dir_all(dest, &input.path);
    }
    let mut file = std::fs::File::open(&input.path)?;
    let size = file.metadata()?.len();
    let mut h = header(size, mode, tar::EntryType::Regular);
    tar.append_data(&mut h, dest, &mut file)
}

/// A file's bytes as a stream, for a request body.
async fn chunks(path: &Path) -> Result<tokio_util::io::ReaderStream<tokio::fs::File>, ImageError> {
    let file = tokio::fs::File::open(path).await.map_err(io(path))?;
    Ok(tokio_util::io::ReaderStream::new(file))
}

/// `docker import` of `tarball`, with the image's labels and `entrypoint`.
async fn import(
    docker: &Docker,
    image: &Image,
    key: &str,
    tarball: &Path,
    entrypoint: Option<&[String]>,
) -> Result<(), ImageError> {
    let (repo, tag) = split_reference(&image.reference);
    let mut changes =
        vec!["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()];
    for (k, v) in labels(image, key) {
        changes.push(format!("LABEL {k}={}", serde_json::Value::String(v)));
    }
    if let Some(entrypoint) = entrypoint {
        changes.push(format!(
            "ENTRYPOINT {}",
            serde_json::to_string(entrypoint).expect("strings serialize")
        ));
    }
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        changes,
        ..CreateImageOptions::default()
    };
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_try_stream(chunks(tarball).await?)),
        None,
    );
    while let Some(info) = stream.next().await {
        info.map_err(|e| ImageError::Build {
            reference: image.reference.clone(),
            step: "import".into(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// `docker build` of a context tarball, printing each `Step` line.
async fn docker_build(
    docker: &Docker,
    image: &Image,
    key: &str,
    tarball: &Path,
    args: &[(String, String)],
    step: &str,
) -> Result<(), ImageError> {
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(image.reference.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(args.iter().cloned().collect()),
        labels: Some(labels(image, key).into_iter().collect()),
        ..BuildImageOptions::default()
    };
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_try_stream(chunks(tarball).await?)),
    );
    let mut current = String::from("start");
    let mut recent: Vec<String> = Vec::new();
    while let Some(info) = stream.next().await {
        let info = info.map_err(|e| ImageError::Build {
            reference: image.reference.clone(),
            step: current.clone(),
            detail: format!("{e}; last output: {}", recent.join(" | ")),
        })?;
        if let Some(text) = info.stream {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if line.starts_with("Step ") {
                    current = line.to_string();
                    let short: String = line.chars().take(110).collect();
                    eprintln!("dynamo-conformance: {step} {short}");
                }
                recent.push(line.to_string());
                if recent.len() > 5 {
                    recent.remove(0);
                }
            }
        }
        if let Some(error) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build {
                reference: image.reference.clone(),
                step: current,
                detail: format!("{error}; last output: {}", recent.join(" | ")),
            });
        }
    }
    Ok(())
}

/// `docker save` of `references` into one tarball (shared layers stored once).
pub async fn save(docker: &Docker, references: &[&str], tarball: &Path) -> Result<(), ImageError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(tarball)
        .await
        .map_err(io(tarball))?;
    let mut stream = docker.export_images(references);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(DockerError::api(format!("save {}", references.join(" "))))?;
        file.write_all(&chunk).await.map_err(io(tarball))?;
    }
    file.flush().await.map_err(io(tarball))?;
    Ok(())
}

/// `("registry.k8s.io/pause", "3.10.1")`; a reference without a tag gets `latest`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(key: &str) -> Image {
        Image {
            reference: "registry.k8s.io/pause:3.10.1".into(),
            recipe: Recipe::Files {
                inputs: vec![Input::keyed(Path::new("/p"), "/pause", key)],
                links: Vec::new(),
                entrypoint: Some(vec!["/pause".into()]),
            },
            placement: Placement::Node,
            note: "real".into(),
        }
    }

    #[test]
    fn references_split_at_the_tag() {
        assert_eq!(
            split_reference("registry.k8s.io/pause:3.10.1"),
            ("registry.k8s.io/pause", "3.10.1")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("localhost:5000/x"),
            ("localhost:5000/x", "latest")
        );
    }

    #[test]
    fn keys_follow_inputs_and_bases() {
        let known = HashMap::new();
        assert_eq!(files("a").key(&known), files("a").key(&known));
        assert_ne!(files("a").key(&known), files("b").key(&known));
        let derived = |base_key: &str| {
            let image = Image {
                reference: "x:1".into(),
                recipe: Recipe::Dockerfile {
                    fixture: &[("Dockerfile", "FROM base")],
                    args: Vec::new(),
                    inputs: Vec::new(),
                    from: vec!["base:1".into()],
                },
                placement: Placement::Cluster,
                note: "real".into(),
            };
            let known = HashMap::from([("base:1".to_string(), base_key.to_string())]);
            image.key(&known)
        };
        assert_ne!(derived("k1"), derived("k2"));
    }

    #[test]
    fn a_files_image_holds_its_inputs_links_and_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("tool");
        std::fs::write(&binary, b"#!/bin/sh\n").unwrap();
        let tarball = dir.path().join("out.tar");
        files_tar(
            &tarball,
            &[Input::keyed(&binary, "/usr/bin/tool", "k")],
            &[("bin/sh".into(), "/usr/bin/tool".into())],
        )
        .unwrap();
        let mut archive = tar::Archive::new(std::fs::File::open(&tarball).unwrap());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("tmp/".to_string(), 0o1777),
                ("usr/bin/tool".to_string(), 0o755),
                ("bin/sh".to_string(), 0o777),
            ]
        );
    }
}
