//! The images of the kind provider's simulated path, as data: what each is, how it is made, where it goes.
//!
//! Every reference is the one the manifests use (kubeadm's, the guide's, the platform chart's), so
//! they apply unchanged. Each entry's note says what is real, what is a stand-in, what is simulated.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::programs::{self, COREDNS_VERSION};
use super::{Image, ImageError, Input, Placement, Recipe};
use crate::cluster::local::{self, KUBERNETES_VERSION};
use crate::command::{self, Bounds};
use crate::debian::{self, Package};
use crate::dynamo::install::digest;
use crate::gobuild::{self, GoProgram};
use crate::profile::Profile;
use crate::release::{DynamoVersion, Release};

/// The Debian release every Debian-based image starts from (bookworm's systemd 252 still boots on
/// a cgroup v1 host; kind's own trixie base would not).
pub const BASE: &str = "dynamo-conformance/debian:bookworm";
/// The base with iptables, nftables and iproute2, for kube-proxy and the node network daemon.
pub const NET: &str = "dynamo-conformance/net:bookworm";
/// The node image.
pub const NODE_IMAGE: &str = "dynamo-conformance/node:v1.34.4";
/// The pause image kubeadm v1.34 expects (and the node's containerd uses for sandboxes).
pub const PAUSE: &str = "registry.k8s.io/pause:3.10.1";
/// The etcd image of the control plane: the local provider's etcd v3.6.16 (kubeadm is told its tag).
pub const CONTROL_PLANE_ETCD: &str = "registry.k8s.io/etcd:3.6.16-0";
/// The Dynamo runtime images' repository (the guide's).
pub const RUNTIME_REPOSITORY: &str = "nvcr.io/nvidia/ai-dynamo/vllm-runtime";
/// The Dynamo operator image's repository (the guide's `--set` names it).
pub const OPERATOR_REPOSITORY: &str = "nvcr.io/nvidia/ai-dynamo/kubernetes-operator";
/// The tag suffix of a runtime image built without jq.
pub const WITHOUT_JQ: &str = "-nojq";

const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

macro_rules! fixture {
    ($dir:literal, [$($file:literal),* $(,)?]) => {
        &[$(($file, include_str!(concat!("../../../fixtures/kind/images/", $dir, "/", $file)))),*]
    };
}

const NET_FIXTURE: &[(&str, &str)] = fixture!("net", ["Dockerfile", "select-iptables"]);
const KUBE_PROXY_FIXTURE: &[(&str, &str)] = fixture!("kube-proxy", ["Dockerfile", "kube-proxy.sh"]);
const NETWORK_FIXTURE: &[(&str, &str)] = fixture!("cni", ["Dockerfile", "node-network.sh"]);
const NODE_FIXTURE: &[(&str, &str)] = fixture!(
    "node",
    [
        "Dockerfile",
        "files/etc/containerd/config.toml",
        "files/etc/systemd/system/dynamo-conformance-images.service",
        "files/etc/systemd/system/kubelet.service.d/12-dynamo-conformance.conf",
        "files/kind/bin/import-images.sh",
        "files/kind/manifests/default-storage.yaml",
    ]
);
const DYNAMO_FIXTURE: &[(&str, &str)] = fixture!("dynamo", ["Dockerfile", "vllm_main.py"]);

/// A release of the Dynamo runtime image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRelease {
    /// Its tag, e.g. `0.4.1`.
    pub tag: String,
    /// The pinned Python set (installed with `--no-deps`).
    pub requirements: String,
    /// The release line's promises (the mocker's role arguments among them).
    pub profile: &'static Profile,
}

impl RuntimeRelease {
    /// The runtime images a run of `release` needs: its own, then the guide's prefill image's
    /// (0.4.0 beside the guide's 0.4.1).
    pub fn of(release: DynamoVersion) -> Vec<RuntimeRelease> {
        let own = RuntimeRelease {
            tag: release.to_string(),
            requirements: release.requirements(),
            profile: release.profile(),
        };
        let prefill = release
            .guide_prefill()
            .and_then(Release::of)
            .map(|row| RuntimeRelease {
                tag: row.version.to_string(),
                requirements: row.requirements.to_string(),
                profile: row.profile,
            });
        std::iter::once(own).chain(prefill).collect()
    }
}

/// The built inputs of the node image.
#[derive(Debug, Clone)]
pub struct NodeArtifacts {
    control_plane: local::Binaries,
    control_plane_key: String,
    node: PathBuf,
    crictl: PathBuf,
    coredns: PathBuf,
    pause: Input,
    kind_base: PathBuf,
    /// The kind binary.
    pub kind: PathBuf,
}

/// Builds (once per machine) what the node image is made of: the Kubernetes binaries, CoreDNS,
/// kind, the pause binary. Blocking; progress on stderr.
pub fn node_artifacts(cache_dir: &Path) -> Result<NodeArtifacts, ImageError> {
    let control_plane = local::build(cache_dir)?;
    let total = 4;
    let kind = gobuild::build(cache_dir, &programs::KIND, &format!("[go 1/{total}]"))?;
    let node = gobuild::build(cache_dir, &programs::NODE, &format!("[go 2/{total}]"))?;
    let crictl = gobuild::build(cache_dir, &programs::CRICTL, &format!("[go 3/{total}]"))?;
    let coredns = gobuild::build(cache_dir, &programs::COREDNS, &format!("[go 4/{total}]"))?;
    let modules = module_cache()?;
    let kind_base = modules
        .join(format!("sigs.k8s.io/kind@{}", programs::KIND_VERSION))
        .join("images/base/files");
    let pause_source = modules
        .join(format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"))
        .join("build/pause/linux/pause.c");
    Ok(NodeArtifacts {
        control_plane,
        control_plane_key: local::version_key(),
        node,
        crictl,
        coredns,
        pause: pause(cache_dir, &pause_source)?,
        kind_base,
        kind: kind.join("kind"),
    })
}

/// `go env GOMODCACHE`: where the wrapper modules' sources (kind's node files, Kubernetes' pause.c) are.
fn module_cache() -> Result<PathBuf, ImageError> {
    let go = gobuild::find_go("the kind provider")?;
    let out = command::run(
        Command::new(go).args(["env", "GOMODCACHE"]),
        "ask go for its module cache",
        Bounds::within(std::time::Duration::from_secs(30)),
    )?;
    Ok(PathBuf::from(out.trim()))
}

/// The pause binary, built with `gcc -static` from Kubernetes' own `pause.c`.
fn pause(cache_dir: &Path, source: &Path) -> Result<Input, ImageError> {
    let text = std::fs::read(source).map_err(super::io(source))?;
    let flags = ["-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10.1"];
    let key = digest(&[&text, flags.join(" ").as_bytes()]);
    let out = cache_dir
        .join("kind")
        .join(format!("pause-{}", &key[..12]))
        .join("pause");
    if !out.is_file() {
        debian::ensure(
            &[Package {
                program: "gcc",
                package: "gcc",
            }],
            cache_dir,
            "the pause image",
        )
        .map_err(|e| command::CommandError {
            what: "find gcc".into(),
            detail: e.to_string(),
        })?;
        let dir = out.parent().expect("a file in a directory");
        std::fs::create_dir_all(dir).map_err(super::io(dir))?;
        command::run(
            Command::new("gcc")
                .args(flags)
                .arg("-o")
                .arg(&out)
                .arg(source),
            "build the pause binary (gcc -static)",
            Bounds::within(std::time::Duration::from_secs(120)),
        )?;
    }
    Ok(Input::keyed(&out, "/pause", &key))
}

fn program_input(program: &GoProgram, cache_dir_bin: &Path, name: &str, dest: &str) -> Input {
    Input::keyed(&cache_dir_bin.join(name), dest, &program.key())
}

fn binary_image(reference: &str, inputs: Vec<Input>, entrypoint: &str, note: &str) -> Image {
    Image {
        reference: reference.into(),
        recipe: Recipe::Files {
            inputs,
            links: Vec::new(),
            entrypoint: Some(vec![entrypoint.into()]),
        },
        placement: Placement::Node,
        note: note.into(),
    }
}

/// The images every node carries, and the two Debian bases they are built from.
pub fn node_images(a: &NodeArtifacts) -> Vec<Image> {
    let cp = |name: &str| {
        Input::keyed(
            &a.control_plane.dir().join(name),
            &format!("/usr/local/bin/{name}"),
            &a.control_plane_key,
        )
    };
    let mut images = vec![
        Image {
            reference: BASE.into(),
            recipe: Recipe::Rootfs {
                suite: "bookworm",
                mirror: DEBIAN_MIRROR,
            },
            placement: Placement::Build,
            note: "real: Debian bookworm (debootstrap --variant=minbase)".into(),
        },
        Image {
            reference: NET.into(),
            recipe: Recipe::Dockerfile {
                fixture: NET_FIXTURE,
                args: vec![("BASE_IMAGE".into(), BASE.into())],
                inputs: Vec::new(),
                from: vec![BASE.into()],
            },
            placement: Placement::Build,
            note: "real: Debian bookworm with iptables, nftables, iproute2".into(),
        },
        binary_image(
            PAUSE,
            vec![a.pause.clone()],
            "/pause",
            "real: Kubernetes' pause.c v3.10.1, built with gcc",
        ),
    ];
    for name in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        images.push(binary_image(
            &format!("registry.k8s.io/{name}:{KUBERNETES_VERSION}"),
            vec![cp(name)],
            &format!("/usr/local/bin/{name}"),
            &format!("real: {name} {KUBERNETES_VERSION} from the Go module proxy"),
        ));
    }
    images.push(binary_image(
        CONTROL_PLANE_ETCD,
        vec![cp("etcd")],
        "/usr/local/bin/etcd",
        "real: etcd v3.6.16 from the Go module proxy",
    ));
    images.push(binary_image(
        &format!("registry.k8s.io/coredns/coredns:{COREDNS_VERSION}"),
        vec![program_input(
            &programs::COREDNS,
            &a.coredns,
            "coredns",
            "/coredns",
        )],
        "/coredns",
        "real: CoreDNS v1.12.1 from the Go module proxy",
    ));
    images.push(Image {
        reference: format!("registry.k8s.io/kube-proxy:{KUBERNETES_VERSION}"),
        recipe: Recipe::Dockerfile {
            fixture: KUBE_PROXY_FIXTURE,
            args: vec![("NET_IMAGE".into(), NET.into())],
            inputs: vec![program_input(
                &programs::NODE,
                &a.node,
                "kube-proxy",
                "kube-proxy",
            )],
            from: vec![NET.into()],
        },
        placement: Placement::Node,
        note: format!("real: kube-proxy {KUBERNETES_VERSION} from the Go module proxy"),
    });
    images.push(Image {
        reference: format!("dynamo-conformance/node-network:{KUBERNETES_VERSION}"),
        recipe: Recipe::Dockerfile {
            fixture: NETWORK_FIXTURE,
            args: vec![("NET_IMAGE".into(), NET.into())],
            inputs: vec![cp("kubectl").with_dest("kubectl")],
            from: vec![NET.into()],
        },
        placement: Placement::Node,
        note: "stand-in for kindnetd (not served by the Go module proxy): ptp CNI and routes"
            .into(),
    });
    images.push(binary_image(
        &format!("dynamo-conformance/gpu-device-plugin:{KUBERNETES_VERSION}"),
        vec![program_input(
            &programs::NODE,
            &a.node,
            "gpu-device-plugin",
            "/usr/local/bin/gpu-device-plugin",
        )],
        "/usr/local/bin/gpu-device-plugin",
        "simulated GPUs: advertises nvidia.com/gpu through the kubelet's device plugin API",
    ));
    images
}

impl Input {
    /// The same input at another place.
    fn with_dest(mut self, dest: &str) -> Input {
        self.dest = dest.into();
        self
    }
}

/// The node image: kind's node conventions on Debian bookworm, the node binaries, and `saved`,
/// the `docker save` of the node's images.
pub fn node_image(a: &NodeArtifacts, saved: Input) -> Image {
    let node = |name: &str| program_input(&programs::NODE, &a.node, name, &format!("bin/{name}"));
    Image {
        reference: NODE_IMAGE.into(),
        recipe: Recipe::Dockerfile {
            fixture: NODE_FIXTURE,
            args: vec![
                ("BASE_IMAGE".into(), BASE.into()),
                ("KUBERNETES_VERSION".into(), KUBERNETES_VERSION.into()),
            ],
            inputs: vec![
                Input::keyed(&a.kind_base, "kind-base", &programs::KIND.key()),
                node("kubeadm"),
                node("kubelet"),
                program_input(&programs::CRICTL, &a.crictl, "crictl", "bin/crictl"),
                Input::keyed(
                    &a.control_plane.kubectl,
                    "bin/kubectl",
                    &a.control_plane_key,
                ),
                saved,
            ],
            from: vec![BASE.into()],
        },
        placement: Placement::NodeImage,
        note: format!(
            "real: a kind node (systemd, containerd 1.6 and runc from Debian bookworm; Kubernetes {KUBERNETES_VERSION} from the Go module proxy); simulated: RuntimeClass nvidia is plain runc"
        ),
    }
}

/// The built inputs of the images the guide's stages run.
#[derive(Debug, Clone)]
pub struct ClusterArtifacts {
    provisioner: PathBuf,
    nats: PathBuf,
    nats_cli: PathBuf,
    rbac_proxy: PathBuf,
    etcd: PathBuf,
    busybox: Input,
    operator: Vec<Input>,
    runtimes: Vec<(RuntimeRelease, Input, Input)>,
}

/// Builds (once per machine) what the guide's images are made of. `exe` is this program, which
/// the operator image runs as the stand-in operator. Blocking; progress on stderr.
pub fn cluster_artifacts(
    cache_dir: &Path,
    exe: &Path,
    release: DynamoVersion,
) -> Result<ClusterArtifacts, ImageError> {
    if release.release().asks_the_hub {
        return Err(ImageError::AsksTheHub {
            release: release.to_string(),
        });
    }
    let go = [
        &programs::PROVISIONER,
        &programs::NATS_SERVER,
        &programs::NATS_CLI,
        &programs::RBAC_PROXY,
        &programs::PLATFORM_ETCD,
    ];
    let mut dirs = Vec::new();
    for (n, program) in go.iter().enumerate() {
        dirs.push(gobuild::build(
            cache_dir,
            program,
            &format!("[go {}/{}]", n + 1, go.len()),
        )?);
    }
    let busybox = debian::ensure(
        &[Package {
            program: "busybox",
            package: "busybox-static",
        }],
        cache_dir,
        "the busybox image",
    )
    .map_err(|e| command::CommandError {
        what: "find busybox".into(),
        detail: e.to_string(),
    })?;
    let busybox = Input::hashed(&busybox[0], "/bin/busybox")?;
    let env = crate::dynamo::install::ensure_env(cache_dir, release)?;
    let model = crate::dynamo::model::ensure_model(cache_dir, &env)?;
    let model_key = model.tokenizer_sha256.clone();
    let mut runtimes = Vec::new();
    for runtime in RuntimeRelease::of(release) {
        let wheels = wheels(cache_dir, &runtime)?;
        runtimes.push((
            runtime,
            wheels,
            Input::keyed(&model.path, "model", &model_key),
        ));
    }
    Ok(ClusterArtifacts {
        provisioner: dirs[0].join("local-path-provisioner"),
        nats: dirs[1].join("nats-server"),
        nats_cli: dirs[2].join("nats"),
        rbac_proxy: dirs[3].join("kube-rbac-proxy"),
        etcd: dirs[4].join("server"),
        busybox,
        operator: operator_files(cache_dir, exe)?,
        runtimes,
    })
}

/// The wheels of a runtime release, downloaded once with pip (Python 3.11, manylinux x86_64).
fn wheels(cache_dir: &Path, runtime: &RuntimeRelease) -> Result<Input, ImageError> {
    let key = digest(&[runtime.requirements.as_bytes(), b"cp311-manylinux-x86_64"]);
    let dir = cache_dir
        .join("kind")
        .join("wheels")
        .join(format!("{}-{}", runtime.tag, &key[..12]));
    let marker = dir.join(".complete");
    if !marker.exists() {
        std::fs::create_dir_all(&dir).map_err(super::io(&dir))?;
        let requirements = dir.join("requirements.txt");
        std::fs::write(&requirements, &runtime.requirements).map_err(super::io(&requirements))?;
        eprintln!(
            "dynamo-conformance: downloading Dynamo {}'s wheels from PyPI into {}",
            runtime.tag,
            dir.display()
        );
        let mut pip = Command::new("python3");
        pip.args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ]);
        for platform in [
            "manylinux_2_28_x86_64",
            "manylinux_2_17_x86_64",
            "manylinux2014_x86_64",
            "any",
        ] {
            pip.args(["--platform", platform]);
        }
        pip.arg("-d").arg(&dir).arg("-r").arg(&requirements);
        command::run(
            &mut pip,
            &format!("download Dynamo {}'s wheels (pip download)", runtime.tag),
            Bounds::long(),
        )?;
        std::fs::write(&marker, &key).map_err(super::io(&marker))?;
    }
    Ok(Input::keyed(&dir, "wheels", &key))
}

/// This program, stripped, as the operator image's `/manager`, with the shared libraries it
/// loads at the paths it loads them from (so the image runs whatever this machine's libc is).
fn operator_files(cache_dir: &Path, exe: &Path) -> Result<Vec<Input>, ImageError> {
    let bytes = std::fs::read(exe).map_err(super::io(exe))?;
    let key = digest(&[&bytes]);
    let dir = cache_dir.join("kind").join("operator").join(&key[..16]);
    let manager = dir.join("manager");
    if !manager.is_file() {
        std::fs::create_dir_all(&dir).map_err(super::io(&dir))?;
        let partial = dir.join("manager.partial");
        command::run(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&partial)
                .arg(exe),
            "strip this program for the operator image",
            Bounds::within(std::time::Duration::from_secs(120)),
        )?;
        std::fs::rename(&partial, &manager).map_err(super::io(&manager))?;
    }
    let mut inputs = vec![Input::keyed(&manager, "/manager", &key)];
    let ldd = command::run(
        Command::new("ldd").arg(exe),
        "list this program's shared libraries (ldd)",
        Bounds::within(std::time::Duration::from_secs(30)),
    )?;
    for library in shared_libraries(&ldd) {
        let real = std::fs::canonicalize(&library).map_err(super::io(&library))?;
        inputs.push(Input::hashed(&real, &library.display().to_string())?);
    }
    Ok(inputs)
}

/// The absolute library paths in `ldd` output (`libc.so.6 => /lib/… (0x…)`, and the loader).
fn shared_libraries(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The mocker's role arguments and the tokenizer's place, as the runtime image's `dynamo.vllm` reads them.
pub fn engine_json(runtime: &RuntimeRelease) -> String {
    serde_json::json!({
        "release": runtime.tag,
        "model_path": "/opt/dynamo-conformance/model",
        "decode": runtime.profile.mocker_roles.decode,
        "prefill": runtime.profile.mocker_roles.prefill,
        "prefill_registers_model": runtime.profile.mocker_roles.prefill_registers_model,
    })
    .to_string()
}

/// The images the guide's stages run on the kind provider, for `release`: the provisioner and its
/// helper, the platform (etcd, NATS, nats-box, kube-rbac-proxy, the operator stand-in) and the
/// Dynamo runtime images. `engine_dir` receives the generated `engine.json` files.
pub fn cluster_images(
    a: &ClusterArtifacts,
    release: DynamoVersion,
    engine_dir: &Path,
) -> Result<Vec<Image>, ImageError> {
    let key = |path: &Path| Input::hashed(path, "").map(|i| i.key);
    let mut links: Vec<(String, String)> = Vec::new();
    for applet in BUSYBOX_APPLETS {
        links.push((format!("bin/{applet}"), "/bin/busybox".into()));
    }
    let cluster = |reference: String, recipe: Recipe, note: &str| Image {
        reference,
        recipe,
        placement: Placement::Cluster,
        note: note.into(),
    };
    let files = |inputs: Vec<Input>, links: Vec<(String, String)>, entrypoint: Option<&str>| {
        Recipe::Files {
            inputs,
            links,
            entrypoint: entrypoint.map(|e| vec![e.to_string()]),
        }
    };
    let mut images = vec![
        cluster(
            "busybox:latest".into(),
            files(vec![a.busybox.clone()], links.clone(), None),
            "real: Debian's busybox-static (the provisioner's helper pods and the PVC check run it)",
        ),
        cluster(
            "rancher/local-path-provisioner:v0.0.32".into(),
            files(
                vec![Input::keyed(
                    &a.provisioner,
                    "/usr/bin/local-path-provisioner",
                    &programs::PROVISIONER.key(),
                )],
                Vec::new(),
                None,
            ),
            "real: local-path-provisioner built from v0.0.30, the newest the Go module proxy serves (v0.0.32 is refused), tagged as the guide's manifest names it",
        ),
        cluster(
            "bitnami/etcd:3.5.18-debian-12-r5".into(),
            files(
                vec![Input::keyed(
                    &a.etcd,
                    "/opt/bitnami/etcd/bin/etcd",
                    &programs::PLATFORM_ETCD.key(),
                )],
                Vec::new(),
                Some("/opt/bitnami/etcd/bin/etcd"),
            ),
            "real: etcd v3.5.18 from the Go module proxy, configured by ETCD_* variables (no bitnami scripts)",
        ),
        cluster(
            "nats:2.10.21-alpine".into(),
            files(
                vec![Input::keyed(
                    &a.nats,
                    "/nats-server",
                    &programs::NATS_SERVER.key(),
                )],
                Vec::new(),
                Some("/nats-server"),
            ),
            "real: nats-server v2.10.21 from the Go module proxy (a static binary, no Alpine)",
        ),
        cluster(
            "natsio/nats-box:0.14.5".into(),
            files(
                vec![
                    a.busybox.clone(),
                    Input::keyed(
                        &a.nats_cli,
                        "/usr/local/bin/nats",
                        &programs::NATS_CLI.key(),
                    ),
                ],
                links,
                None,
            ),
            "real: busybox and the nats command-line tool v0.5.0 from the Go module proxy",
        ),
        cluster(
            "gcr.io/kubebuilder/kube-rbac-proxy:v0.15.0".into(),
            files(
                vec![Input::keyed(
                    &a.rbac_proxy,
                    "/usr/local/bin/kube-rbac-proxy",
                    &programs::RBAC_PROXY.key(),
                )],
                Vec::new(),
                Some("/usr/local/bin/kube-rbac-proxy"),
            ),
            "real: kube-rbac-proxy v0.15.0 from the Go module proxy",
        ),
        cluster(
            format!("{OPERATOR_REPOSITORY}:{release}"),
            files(a.operator.clone(), Vec::new(), Some("/manager")),
            "stand-in: the suite's Dynamo operator (harness/src/operator), since the real operator's Go module is refused by the proxy",
        ),
    ];
    std::fs::create_dir_all(engine_dir).map_err(super::io(engine_dir))?;
    for (runtime, wheels, model) in &a.runtimes {
        let engine = engine_dir.join(format!("engine-{}.json", runtime.tag));
        std::fs::write(&engine, engine_json(runtime)).map_err(super::io(&engine))?;
        let requirements = engine_dir.join(format!("requirements-{}.txt", runtime.tag));
        std::fs::write(&requirements, &runtime.requirements).map_err(super::io(&requirements))?;
        let inputs = vec![
            wheels.clone(),
            model.clone(),
            Input::keyed(&engine, "engine.json", &key(&engine)?),
            Input::keyed(&requirements, "requirements.txt", &key(&requirements)?),
        ];
        for with_jq in [true, false] {
            let suffix = if with_jq { "" } else { WITHOUT_JQ };
            images.push(cluster(
                format!("{RUNTIME_REPOSITORY}:{}{suffix}", runtime.tag),
                Recipe::Dockerfile {
                    fixture: DYNAMO_FIXTURE,
                    args: vec![
                        ("BASE_IMAGE".into(), BASE.into()),
                        ("WITH_JQ".into(), with_jq.to_string()),
                    ],
                    inputs: inputs.clone(),
                    from: vec![BASE.into()],
                },
                &format!(
                    "real: Dynamo {} from PyPI{}; simulated: dynamo.vllm runs Dynamo's mocker engine (no vLLM, no GPU)",
                    runtime.tag,
                    if with_jq { ", curl and jq" } else { ", curl, and no jq (the field failure of upstream #3726)" }
                ),
            ));
        }
    }
    Ok(images)
}

/// The busybox applets the images link (the shell and what the provisioner's scripts and the
/// suite's checks call).
const BUSYBOX_APPLETS: [&str; 24] = [
    "sh", "ash", "cat", "chmod", "cp", "echo", "env", "grep", "hostname", "id", "ls", "mkdir",
    "mv", "ps", "rm", "rmdir", "sed", "sleep", "tail", "test", "timeout", "touch", "true", "wget",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_library_paths() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            shared_libraries(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn the_guides_release_brings_the_guides_prefill_image() {
        let runtimes = |v: &str| RuntimeRelease::of(v.parse().unwrap());
        let guide = runtimes("0.4.1");
        assert_eq!(
            guide.iter().map(|r| r.tag.as_str()).collect::<Vec<_>>(),
            ["0.4.1", "0.4.0"]
        );
        assert_eq!(runtimes("1.6.1").len(), 1);
        for runtime in guide.iter().chain(&runtimes("1.6.1")) {
            assert!(
                runtime
                    .requirements
                    .contains(&format!("ai-dynamo=={}\n", runtime.tag)),
                "{}",
                runtime.tag
            );
        }
    }

    #[test]
    fn the_engine_file_carries_the_release_lines_role_arguments() {
        let runtime = |v: &str| RuntimeRelease::of(v.parse().unwrap()).remove(0);
        let engine: serde_json::Value =
            serde_json::from_str(&engine_json(&runtime("0.4.1"))).unwrap();
        assert_eq!(engine["release"], "0.4.1");
        assert_eq!(
            engine["prefill"],
            serde_json::json!(["--endpoint", "dyn://{namespace}.prefill.generate"])
        );
        assert_eq!(engine["prefill_registers_model"], false);
        let engine: serde_json::Value =
            serde_json::from_str(&engine_json(&runtime("1.6.1"))).unwrap();
        assert_eq!(
            engine["decode"],
            serde_json::json!(["--disaggregation-mode", "decode"])
        );
        assert_eq!(engine["prefill_registers_model"], true);
    }
}
