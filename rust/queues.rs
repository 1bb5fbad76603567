//! Queue names and patterns: which queues are concurrent (and their limits), and which queues
//! a worker serves. The one definition of how a pattern matches a name; the claim statements
//! get its results as plain lists (and, for the blocking queues a worker serves, the same
//! exact-or-prefix rule as two arrays).
//!
//! A pattern is a queue name, or a prefix followed by `*`: `"shop:*"` matches every queue
//! whose name starts with `shop:` (a queue may itself be named with a `*`: names are data).

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::job::validate_name;

/// The character that ends a prefix pattern.
pub const WILDCARD: char = '*';

/// A queue name or a name prefix, as parsed from a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueuePattern {
    Exact(String),
    Prefix(String),
}

impl QueuePattern {
    /// Parse `pattern` (`what` names it in errors): a key ending in `*` is a prefix pattern,
    /// anything else a name. `"*"` alone matches every queue.
    pub fn parse(what: &str, pattern: &str) -> Result<QueuePattern> {
        // A bad name in the App's settings is a configuration error, raised when it is made.
        QueuePattern::parse_given(what, pattern).map_err(|err| match err {
            Error::InvalidName(message) => Error::Configuration(message),
            other => other,
        })
    }

    /// A queue name or pattern an operator gives (`pause_queue`): a bad one raises
    /// `InvalidName`, as a job's queue name does. `"*"` alone names every queue.
    pub fn parse_given(what: &str, pattern: &str) -> Result<QueuePattern> {
        match pattern.strip_suffix(WILDCARD) {
            Some("") => Ok(QueuePattern::Prefix(String::new())),
            Some(prefix) => {
                validate_name(what, prefix)?;
                Ok(QueuePattern::Prefix(prefix.to_owned()))
            }
            None => {
                validate_name(what, pattern)?;
                Ok(QueuePattern::Exact(pattern.to_owned()))
            }
        }
    }

    /// The name, or the prefix without its `*`, and whether it is a prefix: as stored.
    pub fn parts(&self) -> (&str, bool) {
        match self {
            QueuePattern::Exact(name) => (name, false),
            QueuePattern::Prefix(prefix) => (prefix, true),
        }
    }

    /// From its stored parts (see [`QueuePattern::parts`]).
    pub fn from_parts(queue: String, prefix: bool) -> QueuePattern {
        if prefix {
            QueuePattern::Prefix(queue)
        } else {
            QueuePattern::Exact(queue)
        }
    }

    /// As given: the name, or the prefix followed by `*`.
    pub fn text(&self) -> String {
        match self {
            QueuePattern::Exact(name) => name.clone(),
            QueuePattern::Prefix(prefix) => format!("{prefix}{WILDCARD}"),
        }
    }

    pub fn matches(&self, queue: &str) -> bool {
        match self {
            QueuePattern::Exact(name) => name == queue,
            QueuePattern::Prefix(prefix) => queue.starts_with(prefix.as_str()),
        }
    }
}

/// Which queues are concurrent, and their limits of running jobs across all workers; every
/// other queue is blocking. An exact name wins over a pattern, a longer prefix over a shorter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueKinds {
    exact: HashMap<String, u32>,
    /// Longest prefix first, so the first match is the most specific.
    prefixes: Vec<(String, u32)>,
}

impl QueueKinds {
    /// From `queues={"emails": 20, "shop:*": 3}` as given to the App.
    pub fn new(queues: HashMap<String, i64>) -> Result<QueueKinds> {
        let mut kinds = QueueKinds::default();
        for (key, limit) in queues {
            let pattern = QueuePattern::parse("queue", &key)?;
            if limit < 1 {
                return Err(Error::Configuration(format!(
                    "queue {key:?} has a concurrency limit of {limit}: give it at least 1"
                )));
            }
            let limit = u32::try_from(limit).map_err(|_| {
                Error::Configuration(format!("queue {key:?} has a limit of {limit}, too large"))
            })?;
            match pattern {
                QueuePattern::Exact(name) => {
                    kinds.exact.insert(name, limit);
                }
                QueuePattern::Prefix(prefix) => kinds.prefixes.push((prefix, limit)),
            }
        }
        kinds
            .prefixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(kinds)
    }

    /// The limit of a concurrent queue; None for a blocking queue.
    pub fn limit(&self, queue: &str) -> Option<u32> {
        self.exact.get(queue).copied().or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| queue.starts_with(prefix.as_str()))
                .map(|(_, limit)| *limit)
        })
    }

    pub fn is_blocking(&self, queue: &str) -> bool {
        self.limit(queue).is_none()
    }

    pub fn has_patterns(&self) -> bool {
        !self.prefixes.is_empty()
    }

    /// Every key as given, with its limit: exact names and `prefix*` patterns.
    pub fn entries(&self) -> HashMap<String, u32> {
        let mut entries = self.exact.clone();
        for (prefix, limit) in &self.prefixes {
            entries.insert(format!("{prefix}{WILDCARD}"), *limit);
        }
        entries
    }
}

/// The queues a worker serves: all, or those matching some patterns (Celery's `-Q`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSelector {
    /// None: every queue.
    patterns: Option<Vec<QueuePattern>>,
}

impl QueueSelector {
    /// From `only_queues=[...]`; None serves every queue. An empty list is refused: a worker
    /// that serves nothing is a mistake, not a configuration.
    pub fn new(only: Option<Vec<String>>) -> Result<QueueSelector> {
        let Some(only) = only else {
            return Ok(QueueSelector::default());
        };
        if only.is_empty() {
            return Err(Error::Configuration(
                "only_queues is empty: list at least one queue or pattern, or leave it out to \
                 serve every queue"
                    .into(),
            ));
        }
        let mut patterns = only
            .iter()
            .map(|p| QueuePattern::parse("only_queues entry", p))
            .collect::<Result<Vec<_>>>()?;
        if patterns.contains(&QueuePattern::Prefix(String::new())) {
            return Ok(QueueSelector::default());
        }
        patterns.sort();
        patterns.dedup();
        Ok(QueueSelector {
            patterns: Some(patterns),
        })
    }

    pub fn serves(&self, queue: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(queue)),
        }
    }

    /// The patterns as given (`name` or `prefix*`); None for every queue.
    pub fn patterns(&self) -> Option<Vec<String>> {
        self.patterns
            .as_ref()
            .map(|patterns| patterns.iter().map(QueuePattern::text).collect())
    }
}

/// What a worker claims from: the queue kinds its App shares with the enqueuers, and the
/// queues it serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueRouting {
    pub kinds: QueueKinds,
    pub only: QueueSelector,
}

impl QueueRouting {
    /// Whether concurrent queues must be looked up by pattern before a claim.
    pub fn has_concurrent_patterns(&self) -> bool {
        self.kinds.has_patterns()
    }

    /// The concurrent queues to claim from, with their limits, in name order (the order the
    /// claim locks them in): the named ones, and those of `waiting` (queues with waiting
    /// concurrent jobs) that a pattern makes concurrent; only queues this worker serves.
    pub fn concurrent_to_claim(&self, waiting: &[String]) -> Vec<(String, u32)> {
        let mut queues: Vec<(String, u32)> =
            self.kinds
                .exact
                .iter()
                .map(|(queue, limit)| (queue.clone(), *limit))
                .chain(waiting.iter().filter_map(|queue| {
                    self.kinds.limit(queue).map(|limit| (queue.clone(), limit))
                }))
                .filter(|(queue, _)| self.only.serves(queue))
                .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// The blocking queues served, as the claim statement filters them: exact names and
    /// prefixes (both None: every queue).
    pub fn blocking_filter(&self) -> (Option<Vec<String>>, Option<Vec<String>>) {
        match &self.only.patterns {
            None => (None, None),
            Some(patterns) => {
                let (mut names, mut prefixes) = (Vec::new(), Vec::new());
                for pattern in patterns {
                    match pattern {
                        QueuePattern::Exact(name) => names.push(name.clone()),
                        QueuePattern::Prefix(prefix) => prefixes.push(prefix.clone()),
                    }
                }
                (Some(names), Some(prefixes))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(entries: &[(&str, i64)]) -> QueueKinds {
        QueueKinds::new(entries.iter().map(|(k, v)| (k.to_string(), *v)).collect()).unwrap()
    }

    #[test]
    fn a_pattern_makes_every_matching_queue_concurrent_with_its_own_limit() {
        let kinds = kinds(&[("emails", 20), ("shop:*", 3), ("shop:big:*", 9)]);
        assert_eq!(kinds.limit("emails"), Some(20));
        assert_eq!(kinds.limit("shop:42"), Some(3));
        assert_eq!(kinds.limit("shop:big:1"), Some(9), "the longer prefix wins");
        assert!(kinds.is_blocking("shop") && kinds.is_blocking("orders"));
        assert_eq!(kinds.entries().len(), 3);
    }

    #[test]
    fn patterns_are_checked() {
        assert!(QueueKinds::new(HashMap::from([("s:*".to_owned(), 0)])).is_err());
        assert!(QueueKinds::new(HashMap::from([(String::new(), 1)])).is_err());
        assert!(QueueSelector::new(Some(vec![])).is_err());
        assert!(QueueSelector::new(Some(vec!["a\0b*".to_owned()])).is_err());
    }

    #[test]
    fn a_worker_serves_the_queues_its_patterns_match() {
        let only = QueueSelector::new(Some(vec!["a".into(), "shop:*".into()])).unwrap();
        assert!(only.serves("a") && only.serves("shop:1") && !only.serves("b"));
        assert!(QueueSelector::new(Some(vec!["*".into()]))
            .unwrap()
            .serves("x"));
        let routing = QueueRouting {
            kinds: kinds(&[("a", 2), ("c", 5), ("shop:*", 3)]),
            only,
        };
        let waiting = ["shop:2".to_owned(), "shop:1".to_owned(), "zzz".to_owned()];
        assert_eq!(
            routing.concurrent_to_claim(&waiting),
            vec![
                ("a".to_owned(), 2),
                ("shop:1".to_owned(), 3),
                ("shop:2".to_owned(), 3)
            ]
        );
        assert_eq!(
            routing.blocking_filter(),
            (Some(vec!["a".to_owned()]), Some(vec!["shop:".to_owned()]))
        );
    }
}
