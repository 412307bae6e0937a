//! The stage registry's data model: promotion and rollback events, and how replaying
//! them yields which version of a model is in which stage, now or at any past time.
//!
//! Events are immutable JSON documents named by a hash of their content, so histories
//! from two clones merge by taking the union of their events; nothing is ever rewritten.
//! Order is `(time, seq, id)`: `seq` is a Lamport clock (one more than the largest `seq`
//! the writer had seen), so an event always sorts after the ones its writer knew about,
//! and concurrent events sort by time. Where events live in git is the CLI's business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::manifest::GateResult;

/// One version of a model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The commit the version was promoted from.
    pub commit: String,
    /// SHA-256 of the model file (its Git LFS oid).
    pub oid: String,
    pub size: u64,
    pub path: String,
}

impl Version {
    /// `abc1234def (sha256:0123456789…)`.
    pub fn short(&self) -> String {
        format!("{} ({})", prefix(&self.commit, 10), prefix(&self.oid, 12))
    }

    pub fn same_content(&self, other: &Version) -> bool {
        self.oid == other.oid && self.size == other.size
    }
}

/// The first `n` characters of `s` (event fields come from other clones: no byte slicing).
pub fn prefix(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Promote,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Hash of the rest of the event (see [`Event::seal`]).
    #[serde(default)]
    pub id: String,
    pub seq: u64,
    pub model: String,
    pub stage: String,
    pub action: Action,
    pub version: Version,
    /// What the writer saw in the stage before this event.
    pub previous: Option<Version>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Gates were overridden with `--force`.
    #[serde(default)]
    pub forced: bool,
    #[serde(default)]
    pub gates: Vec<GateResult>,
    /// Numeric metrics of `version`, kept so later gates can compare against them even
    /// where that commit is not available (shallow clones).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// `Name <email>`.
    pub who: String,
    pub time: i64,
    #[serde(default)]
    pub tz: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("registry event {name}: {why}")]
    BadEvent { name: String, why: String },
}

impl Event {
    /// Computes `id` from the content.
    pub fn seal(&mut self) {
        self.id.clear();
        let body = serde_json::to_vec(self).expect("serializable");
        self.id = blake3::hash(&body).to_hex()[..20].to_string();
    }

    /// The file name the event is stored under.
    pub fn file_name(&self) -> String {
        format!("{}.json", self.id)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }

    /// Reads an event file, checking that it is what its name says.
    pub fn from_json(name: &str, data: &[u8]) -> Result<Event, RegistryError> {
        let bad = |why: String| RegistryError::BadEvent {
            name: name.to_string(),
            why,
        };
        let ev: Event = serde_json::from_slice(data).map_err(|e| bad(e.to_string()))?;
        let mut check = ev.clone();
        check.seal();
        if check.id != ev.id {
            return Err(bad(format!(
                "content hashes to {}, not {}",
                check.id, ev.id
            )));
        }
        Ok(ev)
    }
}

/// The replay order: time, then Lamport sequence, then id.
pub fn sort(events: &mut [Event]) {
    events.sort_by(|a, b| (a.time, a.seq, &a.id).cmp(&(b.time, b.seq, &b.id)));
}

/// The `seq` for a new event written after `events`.
pub fn next_seq(events: &[Event]) -> u64 {
    events.iter().map(|e| e.seq).max().unwrap_or(0) + 1
}

/// What a stage holds after replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StageState {
    pub stage: String,
    pub current: Version,
    /// When and by whom the current version was put there.
    pub since: i64,
    pub by: String,
    pub action: Action,
    /// Versions a rollback would return to, most recent last (`current` excluded).
    pub earlier: Vec<Version>,
}

impl StageState {
    pub fn rollback_target(&self) -> Option<&Version> {
        self.earlier.last()
    }
}

/// Replays `model`'s events (sorted) up to and including time `until`.
///
/// A promotion pushes a version on the stage's stack; a rollback pops the current one
/// (and pushes its recorded target if, after concurrent events, that is not on top), so
/// rolling back twice goes back two promotions.
pub fn replay(events: &[Event], model: &str, until: Option<i64>) -> BTreeMap<String, StageState> {
    let mut stacks: BTreeMap<String, (Vec<Version>, i64, String, Action)> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.model == model && until.is_none_or(|t| e.time <= t))
    {
        let entry = stacks
            .entry(e.stage.clone())
            .or_insert_with(|| (Vec::new(), 0, String::new(), Action::Promote));
        let stack = &mut entry.0;
        match e.action {
            Action::Promote => {
                if stack.last() != Some(&e.version) {
                    stack.push(e.version.clone());
                }
            }
            Action::Rollback => {
                stack.pop();
                if stack.last() != Some(&e.version) {
                    stack.push(e.version.clone());
                }
            }
        }
        entry.1 = e.time;
        entry.2 = e.who.clone();
        entry.3 = e.action;
    }
    stacks
        .into_iter()
        .filter_map(|(stage, (mut stack, since, by, action))| {
            let current = stack.pop()?;
            Some((
                stage.clone(),
                StageState {
                    stage,
                    current,
                    since,
                    by,
                    action,
                    earlier: stack,
                },
            ))
        })
        .collect()
}

/// Models that have events, sorted.
pub fn models(events: &[Event]) -> Vec<String> {
    let mut m: Vec<String> = events.iter().map(|e| e.model.clone()).collect();
    m.sort();
    m.dedup();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(c: &str) -> Version {
        Version {
            commit: c.repeat(40)[..40].to_string(),
            oid: c.repeat(64)[..64].to_string(),
            size: 10,
            path: "m.safetensors".into(),
        }
    }

    fn ev(seq: u64, time: i64, stage: &str, action: Action, version: &str) -> Event {
        let mut e = Event {
            id: String::new(),
            seq,
            model: "vision".into(),
            stage: stage.into(),
            action,
            version: v(version),
            previous: None,
            reason: None,
            forced: false,
            gates: vec![],
            metrics: BTreeMap::new(),
            who: "A <a@x>".into(),
            time,
            tz: "+0000".into(),
        };
        e.seal();
        e
    }

    #[test]
    fn replay_promotions_and_rollbacks() {
        let mut events = vec![
            ev(1, 100, "production", Action::Promote, "a"),
            ev(2, 200, "production", Action::Promote, "b"),
            ev(3, 200, "staging", Action::Promote, "c"),
            ev(4, 300, "production", Action::Promote, "c"),
            ev(5, 400, "production", Action::Rollback, "b"),
        ];
        sort(&mut events);
        let now = replay(&events, "vision", None);
        assert_eq!(now["production"].current, v("b"));
        assert_eq!(now["production"].rollback_target(), Some(&v("a")));
        assert_eq!(now["production"].action, Action::Rollback);
        assert_eq!(now["staging"].current, v("c"));
        let then = replay(&events, "vision", Some(250));
        assert_eq!(then["production"].current, v("b"));
        assert!(replay(&events, "vision", Some(50)).is_empty());
        assert!(replay(&events, "other", None).is_empty());
        assert_eq!(next_seq(&events), 6);
        assert_eq!(models(&events), vec!["vision"]);
    }

    #[test]
    fn events_round_trip_and_are_checked() {
        let e = ev(1, 100, "production", Action::Promote, "a");
        assert_eq!(e.id.len(), 20);
        let back = Event::from_json(&e.file_name(), e.to_json().as_bytes()).unwrap();
        assert_eq!(back, e);
        let tampered = e.to_json().replace("\"seq\": 1", "\"seq\": 2");
        assert!(Event::from_json("x", tampered.as_bytes()).is_err());
        assert!(Event::from_json("x", b"{").is_err());
        assert_eq!(prefix("ééé", 2), "éé");
        assert_eq!(prefix("ab", 5), "ab");
    }

    #[test]
    fn concurrent_events_order_by_time() {
        // Two clones both saw seq 1 and wrote seq 2: the later one wins.
        let mut events = vec![
            ev(2, 300, "production", Action::Promote, "c"),
            ev(1, 100, "production", Action::Promote, "a"),
            ev(2, 200, "production", Action::Promote, "b"),
        ];
        sort(&mut events);
        let s = replay(&events, "vision", None);
        assert_eq!(s["production"].current, v("c"));
        assert_eq!(s["production"].earlier, vec![v("a"), v("b")]);
    }
}
