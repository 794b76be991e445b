//! What the kept local environment costs while it runs: each process's CPU and memory, sampled.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// One process of the kept environment and what it cost over the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessCost {
    /// Its pid.
    pub pid: i32,
    /// What it is: the cluster's name for it (`kube-apiserver`), or its command (`python3 -m
    /// dynamo.mocker`).
    pub name: String,
    /// CPU over the sample, in percent of one core.
    pub cpu_percent: f64,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

/// The local cluster's processes (its control plane, the agent and every process the agent
/// started), each with its CPU over `window` and its memory. Empty when nothing runs.
pub fn local(cache_dir: &Path, window: Duration) -> Vec<ProcessCost> {
    let mut named: BTreeMap<i32, String> =
        super::local::cluster_pids(&super::local::cluster_dir(cache_dir))
            .into_iter()
            .filter_map(|(name, pid)| Some((i32::try_from(pid).ok()?, name)))
            .collect();
    if let Some(agent) = super::agent::status(cache_dir) {
        let agent = i32::try_from(agent.pid).unwrap_or_default();
        named.insert(agent, "agent (operator stand-in and bridge)".into());
        for pid in descendants(agent) {
            named.entry(pid).or_insert_with(|| command_line(pid));
        }
    }
    sample(&named, window)
}

/// Every live descendant of `root`.
fn descendants(root: i32) -> Vec<i32> {
    let parents: HashMap<i32, i32> = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| Some((p.pid, p.stat().ok()?.ppid)))
        .collect();
    parents
        .keys()
        .copied()
        .filter(|pid| {
            let mut at = *pid;
            while let Some(&parent) = parents.get(&at) {
                if parent == root {
                    return true;
                }
                if parent <= 1 {
                    break;
                }
                at = parent;
            }
            false
        })
        .collect()
}

fn command_line(pid: i32) -> String {
    procfs::process::Process::new(pid)
        .and_then(|p| p.cmdline())
        .map(|args| {
            let args: Vec<String> = args
                .iter()
                .take(3)
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
                .collect();
            args.join(" ")
        })
        .unwrap_or_else(|_| format!("pid {pid}"))
}

fn cpu_ticks(pid: i32) -> Option<(u64, u64)> {
    let stat = procfs::process::Process::new(pid).ok()?.stat().ok()?;
    Some((stat.utime + stat.stime, stat.rss))
}

/// CPU of each process in `named` over `window` (percent of one core) and its resident memory.
fn sample(named: &BTreeMap<i32, String>, window: Duration) -> Vec<ProcessCost> {
    let before: HashMap<i32, u64> = named
        .keys()
        .filter_map(|pid| Some((*pid, cpu_ticks(*pid)?.0)))
        .collect();
    std::thread::sleep(window);
    let ticks = procfs::ticks_per_second() as f64;
    let page = procfs::page_size();
    named
        .iter()
        .filter_map(|(pid, name)| {
            let (now, rss) = cpu_ticks(*pid)?;
            let spent = now.saturating_sub(*before.get(pid)?) as f64 / ticks;
            Some(ProcessCost {
                pid: *pid,
                name: name.clone(),
                cpu_percent: 100.0 * spent / window.as_secs_f64(),
                rss_bytes: rss * page,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_costs_cpu_and_a_sleeping_one_does_not() {
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let named = BTreeMap::from([
            (busy.id() as i32, "busy".to_string()),
            (idle.id() as i32, "idle".to_string()),
        ]);
        std::thread::sleep(Duration::from_millis(200));
        let costs = sample(&named, Duration::from_secs(1));
        let _ = (busy.kill(), idle.kill(), busy.wait(), idle.wait());
        let cpu = |name: &str| costs.iter().find(|c| c.name == name).unwrap().cpu_percent;
        // A busy runner may leave the spinning child little CPU: only the order is certain.
        assert!(cpu("busy") > cpu("idle"), "{costs:?}");
        assert!(cpu("idle") < 5.0, "{costs:?}");
        assert!(costs.iter().all(|c| c.rss_bytes > 0), "{costs:?}");
    }

    #[test]
    fn the_tests_own_children_are_its_descendants() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let found = descendants(std::process::id() as i32);
        let _ = (child.kill(), child.wait());
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }
}
