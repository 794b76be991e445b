//! The Go programs the kind provider builds, each from a pinned wrapper module under `fixtures/kind/go/`.

use std::sync::LazyLock;

use crate::cluster::local::kubernetes_ldflags;
use crate::gobuild::GoProgram;

macro_rules! module {
    ($dir:literal) => {
        &[
            (
                "go.mod",
                include_str!(concat!("../../../fixtures/kind/go/", $dir, "/go.mod")),
            ),
            (
                "go.sum",
                include_str!(concat!("../../../fixtures/kind/go/", $dir, "/go.sum")),
            ),
            (
                "tools.go",
                include_str!(concat!("../../../fixtures/kind/go/", $dir, "/tools.go")),
            ),
        ]
    };
}

/// kind v0.33.0, the newest the Go module proxy serves.
pub const KIND_VERSION: &str = "v0.33.0";
/// CoreDNS as kubeadm v1.34 deploys it.
pub const COREDNS_VERSION: &str = "v1.12.1";
/// The local-path provisioner that is built: v0.0.30, because the proxy refuses the guide's v0.0.32.
pub const PROVISIONER_BUILT_VERSION: &str = "v0.0.30";
/// The etcd release of the platform chart's `bitnami/etcd:3.5.18-debian-12-r5` image.
pub const PLATFORM_ETCD_VERSION: &str = "v3.5.18";

/// kind itself (the cluster tool; it drives Docker).
pub static KIND: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "kind",
    title: "kind v0.33.0",
    files: module!("kind"),
    packages: &["sigs.k8s.io/kind"],
    outputs: &["kind"],
    ldflags: "-s -w".into(),
});

const NODE_FILES: &[(&str, &str)] = &[
    (
        "go.mod",
        include_str!("../../../fixtures/kind/go/kubernetes/go.mod"),
    ),
    (
        "go.sum",
        include_str!("../../../fixtures/kind/go/kubernetes/go.sum"),
    ),
    (
        "tools.go",
        include_str!("../../../fixtures/kind/go/kubernetes/tools.go"),
    ),
    (
        "gpu-device-plugin/main.go",
        include_str!("../../../fixtures/kind/go/kubernetes/gpu-device-plugin/main.go"),
    ),
];

/// The node's Kubernetes programs (kubeadm, kubelet, kube-proxy, the same release as the local
/// provider's control plane) and the simulated-GPU device plugin built on the kubelet's stub.
pub static NODE: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "kubernetes-node",
    title: "kubeadm, kubelet and kube-proxy v1.34.4 and the simulated-GPU device plugin",
    files: NODE_FILES,
    packages: &[
        "k8s.io/kubernetes/cmd/kubeadm",
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kube-proxy",
        "./gpu-device-plugin",
    ],
    outputs: &["kubeadm", "kubelet", "kube-proxy", "gpu-device-plugin"],
    ldflags: kubernetes_ldflags(),
});

/// crictl, the node's CRI client (kind's image loading asks it which images a node has).
pub static CRICTL: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "crictl",
    title: "crictl v1.34.0",
    files: module!("cri-tools"),
    packages: &["sigs.k8s.io/cri-tools/cmd/crictl"],
    outputs: &["crictl"],
    ldflags: "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v1.34.0".into(),
});

/// CoreDNS.
pub static COREDNS: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "coredns",
    title: "CoreDNS v1.12.1",
    files: module!("coredns"),
    packages: &["github.com/coredns/coredns"],
    outputs: &["coredns"],
    ldflags: "-s -w".into(),
});

/// The local-path provisioner.
pub static PROVISIONER: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "local-path-provisioner",
    title: "local-path-provisioner v0.0.30 (the proxy refuses v0.0.32)",
    files: module!("local-path-provisioner"),
    packages: &["github.com/rancher/local-path-provisioner"],
    outputs: &["local-path-provisioner"],
    ldflags: format!("-s -w -X main.VERSION={PROVISIONER_BUILT_VERSION}"),
});

/// The NATS server of the platform chart.
pub static NATS_SERVER: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "nats-server",
    title: "nats-server v2.10.21",
    files: module!("nats"),
    packages: &["github.com/nats-io/nats-server/v2"],
    outputs: &["nats-server"],
    ldflags: "-s -w".into(),
});

/// The `nats` command of the nats-box image.
pub static NATS_CLI: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "natscli",
    title: "the nats command-line tool v0.5.0",
    files: module!("natscli"),
    packages: &["github.com/nats-io/natscli/nats"],
    outputs: &["nats"],
    ldflags: "-s -w -X main.version=v0.5.0".into(),
});

/// kube-rbac-proxy, the Dynamo 0.4 operator pod's sidecar.
pub static RBAC_PROXY: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "kube-rbac-proxy",
    title: "kube-rbac-proxy v0.15.0",
    files: module!("kube-rbac-proxy"),
    packages: &["github.com/brancz/kube-rbac-proxy/cmd/kube-rbac-proxy"],
    outputs: &["kube-rbac-proxy"],
    ldflags: "-s -w".into(),
});

/// etcd 3.5.18, the release of the platform chart's etcd image.
pub static PLATFORM_ETCD: LazyLock<GoProgram> = LazyLock::new(|| GoProgram {
    name: "etcd-3.5",
    title: "etcd v3.5.18",
    files: module!("etcd"),
    packages: &["go.etcd.io/etcd/server/v3"],
    outputs: &["server"],
    ldflags: format!("-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={PLATFORM_ETCD_VERSION}"),
});

/// Every program, in the order they are built.
pub fn all() -> [&'static GoProgram; 9] {
    [
        &KIND,
        &NODE,
        &CRICTL,
        &COREDNS,
        &PROVISIONER,
        &NATS_SERVER,
        &NATS_CLI,
        &RBAC_PROXY,
        &PLATFORM_ETCD,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::local::KUBERNETES_VERSION;

    #[test]
    fn wrapper_modules_pin_the_releases() {
        let require = |p: &GoProgram, line: &str| {
            let go_mod = p.files.iter().find(|(n, _)| *n == "go.mod").unwrap().1;
            assert!(go_mod.contains(line), "{} go.mod lacks {line}", p.name);
            let go_sum = p.files.iter().find(|(n, _)| *n == "go.sum").unwrap().1;
            assert!(!go_sum.is_empty(), "{} has no go.sum", p.name);
        };
        require(&KIND, "sigs.k8s.io/kind v0.33.0");
        require(&NODE, "k8s.io/kubernetes v1.34.4");
        require(&COREDNS, "github.com/coredns/coredns v1.12.1");
        require(&CRICTL, "sigs.k8s.io/cri-tools v1.34.0");
        require(
            &PROVISIONER,
            "github.com/rancher/local-path-provisioner v0.0.30",
        );
        require(&NATS_SERVER, "github.com/nats-io/nats-server/v2 v2.10.21");
        require(&NATS_CLI, "github.com/nats-io/natscli v0.5.0");
        require(&RBAC_PROXY, "github.com/brancz/kube-rbac-proxy v0.15.0");
        require(&PLATFORM_ETCD, "go.etcd.io/etcd/server/v3 v3.5.18");
        assert!(
            NODE.ldflags
                .contains(&format!("gitVersion={KUBERNETES_VERSION}"))
        );
    }

    #[test]
    fn every_program_has_its_own_cache_key() {
        let mut keys: Vec<String> = all().iter().map(|p| p.key()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), all().len());
    }
}
