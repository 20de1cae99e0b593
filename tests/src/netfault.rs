//! Network partitions between test nodes on loopback, with iptables.
//!
//! Every test node listens on an address of its own in 127.0.0.0/8 and opens its connections
//! to other nodes from that address (the node binds its outgoing sockets to its listen IP), so a
//! rule on the pair of addresses cuts exactly the traffic between two nodes, in both
//! directions, while the test's clients (which connect from 127.0.0.1) still reach every node:
//! a minority leader keeps taking writes it cannot commit. Packets are dropped, not refused, as
//! on a real network that failed: connects and calls hang until their deadlines.
//!
//! The rules live in a chain of their own (`LAUNCHER-NET-<pid>-<n>`, one per firewall), reached from `OUTPUT` only
//! for traffic inside 127.0.0.0/8, and are removed when the [`Firewall`] is dropped; chains left
//! behind by a test process that died are removed by the next one. Needs root and iptables (the
//! machines of this project have both); without them the test fails with that message.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context};

const PREFIX: &str = "LAUNCHER-NET-";

/// A chain of DROP rules between pairs of loopback addresses.
pub struct Firewall {
    chain: String,
    cuts: BTreeSet<(String, String)>,
}

fn iptables(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .context("cannot run iptables (network partition tests need iptables and root)")?;
    if !out.status.success() {
        bail!(
            "iptables {}: {} (network partition tests need iptables and root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rule of `OUTPUT` that sends loopback-to-loopback traffic through `chain`, with the
/// action `op` (`-I` insert, `-D` delete).
fn jump<'a>(op: &'a str, chain: &'a str) -> [&'a str; 8] {
    [
        op,
        "OUTPUT",
        "-s",
        "127.0.0.0/8",
        "-d",
        "127.0.0.0/8",
        "-j",
        chain,
    ]
}

fn remove_chain(chain: &str) {
    // Each step may fail when an earlier run got halfway; what is left is removed regardless.
    while iptables(&jump("-D", chain)).is_ok() {}
    let _ = iptables(&["-F", chain]);
    let _ = iptables(&["-X", chain]);
}

impl Firewall {
    /// Creates this process' chain (removing those of test processes that are gone).
    pub fn new() -> anyhow::Result<Firewall> {
        let rules = iptables(&["-S"])?;
        for line in rules.lines() {
            let Some(chain) = line.strip_prefix("-N ") else {
                continue;
            };
            // `<PREFIX><pid>-<n>`: one chain per firewall, several per test process.
            let Some(pid) = chain
                .strip_prefix(PREFIX)
                .and_then(|p| p.split('-').next())
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if !alive {
                remove_chain(chain);
            }
        }
        // Tests of one process (`cargo test` runs them on threads) each get a chain of their own.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chain = format!("{PREFIX}{}-{n}", std::process::id());
        remove_chain(&chain);
        iptables(&["-N", &chain])?;
        let fw = Firewall {
            chain,
            cuts: BTreeSet::new(),
        };
        iptables(&jump("-I", &fw.chain))?;
        Ok(fw)
    }

    /// Drops every packet between `a` and `b` (IP addresses), both ways.
    pub fn cut(&mut self, a: &str, b: &str) -> anyhow::Result<()> {
        let pair = if a < b { (a, b) } else { (b, a) };
        if !self.cuts.insert((pair.0.to_string(), pair.1.to_string())) {
            return Ok(());
        }
        for (src, dst) in [(a, b), (b, a)] {
            iptables(&["-A", &self.chain, "-s", src, "-d", dst, "-j", "DROP"])?;
        }
        Ok(())
    }

    /// Drops every packet between `a` and each of `others`: `a` is isolated from them.
    pub fn isolate(&mut self, a: &str, others: &[&str]) -> anyhow::Result<()> {
        for b in others {
            self.cut(a, b)?;
        }
        Ok(())
    }

    /// The pairs cut now.
    pub fn cuts(&self) -> &BTreeSet<(String, String)> {
        &self.cuts
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        iptables(&["-F", &self.chain])?;
        self.cuts.clear();
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        remove_chain(&self.chain);
    }
}
