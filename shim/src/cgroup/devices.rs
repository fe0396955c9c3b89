//! The v1 devices cgroup: a spec's device rules checked, and an `Update` written as the
//! smallest change from what the cgroup allows now.
//!
//! The devices controller keeps a default (allow everything, or deny everything) and a list
//! of exceptions; `devices.list` shows it (`a *:* rwm` for "allow everything", else one
//! exception per line). Writing a spec's list as it is begins with "deny all" (`a` into
//! `devices.deny`): for a running container that is a moment in which `/dev/null` is
//! denied, and a write the kernel refuses halfway leaves it so. runc instead reads
//! `devices.list`, works out both states, and writes only the difference
//! (`libcontainer/cgroups/devices`' emulator): what the target drops, then what it adds,
//! with a "deny all" or "allow all" only where the default itself changes. So does
//! [`transition`].

use std::collections::BTreeMap;

use crate::{
    cgroup::resources::DeviceRule,
    error::{Error, Result},
};

/// Checks a device rule before anything is written: a type the controller knows (`a`, `b`,
/// `c`), numbers that are not negative, and an access of `r`, `w` and `m`, each once.
pub fn validate(rule: &DeviceRule) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "linux.resources.devices: {rule:?}: {why}"
        )))
    };
    if !matches!(rule.kind, 'a' | 'b' | 'c') {
        return bad("the type is a (all), b (block) or c (character)");
    }
    if rule.major.is_some_and(|n| n < 0) || rule.minor.is_some_and(|n| n < 0) {
        return bad("a device number is not negative (leave it out for any)");
    }
    let mut seen = String::new();
    for c in rule.access.chars() {
        if !matches!(c, 'r' | 'w' | 'm') || seen.contains(c) {
            return bad("the access is some of r, w and m, each once");
        }
        seen.push(c);
    }
    if seen.is_empty() {
        return bad("the access is empty");
    }
    Ok(())
}

/// Which devices an exception covers: type, major, minor (`None` for `*`).
type Node = (char, Option<i64>, Option<i64>);

/// What a devices cgroup allows, as the kernel keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The default: allow every device (`a *:* rwm`), or deny every one.
    allow_all: bool,
    /// The exceptions to the default, with their access (`rwm` as bits).
    exceptions: BTreeMap<Node, u8>,
}

fn bits(access: &str) -> u8 {
    access.chars().fold(0, |b, c| match c {
        'r' => b | 1,
        'w' => b | 2,
        'm' => b | 4,
        _ => b,
    })
}

fn access(bits: u8) -> String {
    [(1, 'r'), (2, 'w'), (4, 'm')]
        .into_iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, c)| c)
        .collect()
}

impl State {
    /// What `devices.list` says: `a *:* rwm` alone for "allow all", else the exceptions to
    /// "deny all". `None` for a line it cannot read.
    pub fn from_list(text: &str) -> Option<State> {
        let mut state = State::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut fields = line.split_whitespace();
            let kind = fields.next()?.chars().next()?;
            let (major, minor) = fields.next()?.split_once(':')?;
            let number = |n: &str| match n {
                "*" => Some(None),
                n => n.parse().ok().map(Some),
            };
            let bits = bits(fields.next()?);
            if kind == 'a' {
                return Some(State {
                    allow_all: true,
                    exceptions: BTreeMap::new(),
                });
            }
            state
                .exceptions
                .insert((kind, number(major)?, number(minor)?), bits);
        }
        Some(state)
    }

    /// What `rules`, written in order into a cgroup that denies everything, make of it.
    pub fn from_rules(rules: &[DeviceRule]) -> State {
        let mut state = State::default();
        for rule in rules {
            state.apply(rule);
        }
        state
    }

    /// One rule, as the kernel applies it: `a` sets the default and drops the exceptions;
    /// a rule against the default adds an exception, one along it takes access away from
    /// the exception for exactly that node.
    fn apply(&mut self, rule: &DeviceRule) {
        if rule.kind == 'a' {
            self.allow_all = rule.allow;
            self.exceptions.clear();
            return;
        }
        let node = (rule.kind, rule.major, rule.minor);
        let bits = bits(&rule.access);
        if rule.allow != self.allow_all {
            *self.exceptions.entry(node).or_default() |= bits;
        } else if let Some(held) = self.exceptions.get_mut(&node) {
            *held &= !bits;
            if *held == 0 {
                self.exceptions.remove(&node);
            }
        }
    }
}

/// The rules that take a devices cgroup from `now` to `target`, in order: a "deny all" or
/// "allow all" only where the default changes, then the access the target drops, then
/// what it adds. Empty when nothing changes.
///
/// Where both allow everything, `devices.list` shows no denials (the kernel keeps them but
/// does not list them), and runc's emulator writes "allow all" again to start from a known
/// state; this writes only the target's denials instead: an "allow all" is refused (EINVAL)
/// in a cgroup with child cgroups (a privileged container running systemd or docker), and
/// for a moment it would allow what the target denies. (`runc update` leaves the device
/// list alone altogether; the kubelet repeats it in every `UpdateContainerResources`.)
pub fn transition(now: &State, target: &State) -> Vec<DeviceRule> {
    let rule = |allow, (kind, major, minor): Node, bits| DeviceRule {
        allow,
        kind,
        major,
        minor,
        access: access(bits),
    };
    let mut rules = Vec::new();
    let mut held = &now.exceptions;
    let none = BTreeMap::new();
    if now.allow_all != target.allow_all {
        rules.push(rule(target.allow_all, ('a', None, None), 7));
        held = &none;
    }
    // An exception goes against the default: dropping access is a rule along it.
    for (node, bits) in held {
        let dropped = bits & !target.exceptions.get(node).copied().unwrap_or(0);
        if dropped != 0 {
            rules.push(rule(target.allow_all, *node, dropped));
        }
    }
    for (node, bits) in &target.exceptions {
        let gained = bits & !held.get(node).copied().unwrap_or(0);
        if gained != 0 {
            rules.push(rule(!target.allow_all, *node, gained));
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        kind: char,
        major: Option<i64>,
        minor: Option<i64>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: a.into(),
        }
    }

    fn lines(rules: &[DeviceRule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{} {}", if r.allow { "allow" } else { "deny" }, r.line()))
            .collect()
    }

    #[test]
    fn bad_rules_are_refused_good_ones_pass() {
        for good in [
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'c', Some(1), Some(3), "rw"),
            rule(true, 'b', None, None, "m"),
        ] {
            assert!(validate(&good).is_ok(), "{good:?}");
        }
        for bad in [
            rule(true, 'x', Some(1), Some(3), "rwm"),
            rule(true, 'c', Some(-2), Some(3), "rwm"),
            rule(true, 'c', Some(1), Some(3), "rwx"),
            rule(true, 'c', Some(1), Some(3), "rr"),
            rule(true, 'c', Some(1), Some(3), ""),
        ] {
            assert!(
                matches!(validate(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn devices_list_is_read_as_the_kernel_keeps_it() {
        let all = State::from_list("a *:* rwm\n").expect("list");
        assert!(all.allow_all && all.exceptions.is_empty());
        let some = State::from_list("c 1:3 rwm\nc *:* m\nc 136:* rw\n").expect("list");
        assert!(!some.allow_all);
        assert_eq!(some.exceptions.get(&('c', Some(1), Some(3))), Some(&7));
        assert_eq!(some.exceptions.get(&('c', None, None)), Some(&4));
        assert_eq!(some.exceptions.get(&('c', Some(136), None)), Some(&3));
        assert!(State::from_list("c 1:x rwm").is_none());
    }

    /// A new cgroup allows everything: the first write is "deny all", then the exceptions.
    /// An `Update` of a running container: no "deny all", only what changes. Either way
    /// the rules reach the target, and the same list again writes nothing.
    #[test]
    fn a_transition_writes_only_the_difference() {
        let deny_all = rule(false, 'a', None, None, "rwm");
        let null = rule(true, 'c', Some(1), Some(3), "rwm");
        let cases: [(&str, Vec<DeviceRule>, &[&str]); 3] = [
            (
                "a *:* rwm",
                vec![deny_all.clone(), null.clone()],
                &["deny a", "allow c 1:3 rwm"],
            ),
            (
                "c 1:3 rwm\nc 1:5 rwm\nc 10:200 rwm\n",
                vec![
                    deny_all,
                    null,
                    rule(true, 'c', Some(1), Some(5), "r"),
                    rule(true, 'c', Some(1), Some(9), "rwm"),
                ],
                &["deny c 1:5 wm", "deny c 10:200 rwm", "allow c 1:9 rwm"],
            ),
            // A privileged container (allow all), updated with its list repeated and one
            // denial more: no "allow all" (refused with child cgroups), only the denial.
            (
                "a *:* rwm",
                vec![
                    rule(true, 'a', None, None, "rwm"),
                    rule(false, 'c', Some(10), Some(200), "rwm"),
                ],
                &["deny c 10:200 rwm"],
            ),
        ];
        for (list, rules, expected) in cases {
            let now = State::from_list(list).expect("list");
            let target = State::from_rules(&rules);
            let written = transition(&now, &target);
            assert_eq!(lines(&written), expected, "from {list:?}");
            let mut after = now.clone();
            for rule in &written {
                after.apply(rule);
            }
            assert_eq!(after, target, "from {list:?}: the target is not reached");
            assert!(transition(&target, &target).is_empty());
        }
    }
}
