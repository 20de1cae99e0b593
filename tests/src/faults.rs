//! Deterministic fault injection between in-process nodes ([`crate::inproc::InProcCluster`]),
//! in the spirit of TiKV's transport filters.
//!
//! A [`Plan`] holds rules, each for a set of senders, receivers and message kinds
//! ([`launcher_node::faults::Kind`]: append, vote, snapshot, forward, read-index, heartbeat,
//! ...) with an action: drop, delay (a range: random delays reorder messages), duplicate, each
//! with a probability. A partition is drop rules both ways. The first rule that matches a
//! message decides it.
//!
//! Replayable: whether a rule fires on a message, and the delay it picks, are a hash of the
//! seed, the pair of nodes, the kind and that message's number among the messages of that kind
//! between that pair. So the n-th append from node 1 to node 2 meets the same fate in every
//! run with the same seed, however the messages of other pairs interleave with it. Every
//! decision other than delivery is logged ([`Plan::decisions`]) for the failure message.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use launcher_node::faults::{Fault, FaultPlan, Kind};

/// What a rule does to the messages it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Lost (the caller waits out its deadline).
    Drop,
    /// Sent after a delay drawn from `[min, max]`.
    Delay { min: Duration, max: Duration },
    /// Sent twice.
    Duplicate,
}

/// One rule: `action` with `probability` on messages of `kinds` (all if empty) from any of
/// `from` to any of `to` (anyone if empty).
#[derive(Debug, Clone)]
pub struct Rule {
    pub from: Vec<IpAddr>,
    pub to: Vec<IpAddr>,
    pub kinds: Vec<Kind>,
    pub action: Action,
    pub probability: f64,
}

impl Rule {
    /// `action` on every message from `from` to `to` (of any kind).
    pub fn between(from: &[IpAddr], to: &[IpAddr], action: Action) -> Rule {
        Rule {
            from: from.to_vec(),
            to: to.to_vec(),
            kinds: Vec::new(),
            action,
            probability: 1.0,
        }
    }

    /// Only messages of `kinds`.
    pub fn kinds(mut self, kinds: &[Kind]) -> Rule {
        self.kinds = kinds.to_vec();
        self
    }

    /// Only this share of the matching messages.
    pub fn probability(mut self, p: f64) -> Rule {
        self.probability = p;
        self
    }

    fn matches(&self, from: Option<IpAddr>, to: Option<IpAddr>, kind: Kind) -> bool {
        let has =
            |set: &[IpAddr], ip: Option<IpAddr>| set.is_empty() || ip.is_some_and(|ip| set.contains(&ip));
        has(&self.from, from) && has(&self.to, to) && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// A handle on a rule of a [`Plan`], to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleId(u64);

/// Messages of one kind from one node to another address.
type Channel = (Option<IpAddr>, String, Kind);

/// One decision other than delivery: (from, to, kind, message number, what).
pub type Decision = (Option<IpAddr>, String, Kind, u64, Fault);

/// A seeded set of fault rules that every in-process node of a cluster consults.
#[derive(Debug)]
pub struct Plan {
    seed: u64,
    rules: Mutex<Vec<(RuleId, Rule)>>,
    next_rule: Mutex<u64>,
    counters: Mutex<HashMap<Channel, u64>>,
    decisions: Mutex<Vec<Decision>>,
}

impl Plan {
    /// A plan without rules (everything is delivered) whose random choices follow `seed`.
    pub fn new(seed: u64) -> Plan {
        Plan {
            seed,
            rules: Mutex::default(),
            next_rule: Mutex::default(),
            counters: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The seed (print it with a failure: the same seed replays the same faults).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Adds `rule` after the existing ones.
    pub fn add(&self, rule: Rule) -> RuleId {
        let mut n = self.next_rule.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        let id = RuleId(*n);
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, rule));
        id
    }

    /// Removes the rule `id`.
    pub fn remove(&self, id: RuleId) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(r, _)| *r != id);
    }

    /// Removes every rule: the network heals.
    pub fn heal(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Cuts `a` from `b` both ways (every kind of message is dropped).
    pub fn partition(&self, a: &[IpAddr], b: &[IpAddr]) -> [RuleId; 2] {
        [
            self.add(Rule::between(a, b, Action::Drop)),
            self.add(Rule::between(b, a, Action::Drop)),
        ]
    }

    /// What was done to messages so far, other than delivering them.
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A number in [0, 1) fixed by the seed, the message's pair, kind and number, and `salt`.
    fn draw(&self, from: Option<IpAddr>, to: &str, kind: Kind, n: u64, salt: u8) -> f64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, from, to, kind, n, salt).hash(&mut h);
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl FaultPlan for Plan {
    fn decide(&self, from: Option<IpAddr>, to: &str, kind: Kind) -> Fault {
        let n = {
            let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            let c = counters.entry((from, to.to_string(), kind)).or_default();
            *c += 1;
            *c
        };
        let to_ip = to.parse::<SocketAddr>().ok().map(|a| a.ip());
        let rule = {
            let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
            rules
                .iter()
                .find(|(_, r)| r.matches(from, to_ip, kind))
                .map(|(_, r)| r.clone())
        };
        let Some(rule) = rule else {
            return Fault::Deliver;
        };
        if self.draw(from, to, kind, n, 0) >= rule.probability {
            return Fault::Deliver;
        }
        let fault = match rule.action {
            Action::Drop => Fault::Drop,
            Action::Duplicate => Fault::Duplicate,
            Action::Delay { min, max } => {
                let span = max.saturating_sub(min).as_secs_f64();
                Fault::Delay(min + Duration::from_secs_f64(span * self.draw(from, to, kind, n, 1)))
            }
        };
        self.decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((from, to.to_string(), kind, n, fault));
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn run(plan: &Plan, order: &[(u8, u8, Kind)]) -> Vec<(u8, u8, Kind, Fault)> {
        order
            .iter()
            .map(|&(a, b, k)| (a, b, k, plan.decide(Some(ip(a)), &format!("127.0.0.{b}:5000"), k)))
            .collect()
    }

    fn storm(seed: u64) -> Plan {
        let plan = Plan::new(seed);
        plan.add(
            Rule::between(&[], &[], Action::Drop)
                .kinds(&[Kind::Vote])
                .probability(0.3),
        );
        plan.add(
            Rule::between(
                &[],
                &[],
                Action::Delay {
                    min: Duration::from_millis(1),
                    max: Duration::from_millis(50),
                },
            )
            .probability(0.5),
        );
        plan
    }

    /// The same seed gives every message the same fate, however messages of different pairs
    /// interleave; another seed gives other fates.
    #[test]
    fn decisions_replay_per_pair_and_kind() {
        let mut order = Vec::new();
        for i in 0..200u32 {
            let kind = [Kind::Append, Kind::Vote, Kind::Heartbeat][(i % 3) as usize];
            order.push((1 + (i % 2) as u8, 3 + (i % 3) as u8, kind));
        }
        let first = run(&storm(7), &order);
        // The same messages, the pairs interleaved differently.
        let mut shuffled = order.clone();
        shuffled.sort_by_key(|&(a, b, _)| (b, a));
        let mut second = run(&storm(7), &shuffled);
        let mut first_sorted = first.clone();
        let key = |x: &(u8, u8, Kind, Fault)| (x.0, x.1, x.2);
        first_sorted.sort_by_key(key);
        second.sort_by_key(key);
        // Sorting is stable, so within a pair and kind the messages keep their order.
        assert_eq!(first_sorted, second);
        assert_ne!(first, run(&storm(8), &order), "another seed, other fates");
        assert!(first.iter().any(|x| x.3 == Fault::Drop));
        assert!(first.iter().any(|x| matches!(x.3, Fault::Delay(_))));
        assert!(first.iter().any(|x| x.3 == Fault::Deliver));
        assert!(
            first.iter().all(|x| x.3 != Fault::Drop || x.2 == Kind::Vote),
            "only votes are dropped"
        );
    }

    /// A partition drops everything between its sides, both ways, and nothing else; healing
    /// removes it.
    #[test]
    fn partitions_cut_both_ways_until_healed() {
        let plan = Plan::new(1);
        plan.partition(&[ip(1)], &[ip(2), ip(3)]);
        let fate = |a: u8, b: u8| plan.decide(Some(ip(a)), &format!("127.0.0.{b}:1"), Kind::Append);
        assert_eq!(fate(1, 2), Fault::Drop);
        assert_eq!(fate(3, 1), Fault::Drop);
        assert_eq!(fate(2, 3), Fault::Deliver);
        plan.heal();
        assert_eq!(fate(1, 2), Fault::Deliver);
        assert_eq!(plan.decisions().len(), 2);
    }
}
