//! What a node knows of its cluster's state in etcd: where each part of it is
//! kept (the keys under the cluster's prefix), and the members and shard
//! claims as last read.
//!
//! The view may be stale; nothing that keeps one worker per id rests on it
//! alone. A claim is a create-if-absent in etcd, a release deletes only the
//! claim of its own epoch, and an owner checks the epoch a request carries:
//! a stale view costs a retry, never a second owner.

use crate::ClusterError;
use etcd_client::{Client, GetOptions};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::timeout;

/// The etcd keys of one cluster, all under its prefix.
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub(crate) fn shard_count(&self) -> String {
        format!("{}/config/shards", self.prefix)
    }
    pub(crate) fn member(&self, name: &str) -> String {
        format!("{}/members/{name}", self.prefix)
    }
    pub(crate) fn shard(&self, shard: u32) -> String {
        format!("{}/shards/{shard:010}", self.prefix)
    }
    fn shards(&self) -> String {
        format!("{}/shards/", self.prefix)
    }
    /// The report by `reporter` that it cannot reach `target`.
    pub(crate) fn suspect(&self, target: &str, reporter: &str) -> String {
        format!("{}/suspects/{target}/{reporter}", self.prefix)
    }
    fn suspects(&self) -> String {
        format!("{}/suspects/", self.prefix)
    }
    pub(crate) fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
}

/// One shard key as read from etcd.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub(crate) node: String,
    pub(crate) epoch: i64,
    pub(crate) lease: i64,
}

/// The live members (name to address), the shard claims, and the reports
/// of members that cannot reach others.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) members: BTreeMap<String, String>,
    pub(crate) claims: HashMap<u32, Claim>,
    /// By target: the reporters that cannot reach it, and the address they
    /// last tried.
    pub(crate) suspects: BTreeMap<String, BTreeMap<String, String>>,
}

impl View {
    /// Reads members and shard claims from etcd.
    pub(crate) async fn read(
        etcd: &Client,
        keys: &Keys,
        within: Duration,
    ) -> Result<View, ClusterError> {
        let mut etcd = etcd.clone();
        let response = timeout(
            within,
            etcd.get(keys.all(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| ClusterError::Etcd("reading the cluster's state timed out".into()))??;
        let members_prefix = keys.member("");
        let shards_prefix = keys.shards();
        let suspects_prefix = keys.suspects();
        let mut view = View::default();
        for kv in response.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            if let Some((target, reporter)) = key
                .strip_prefix(&suspects_prefix)
                .and_then(|rest| rest.split_once('/'))
            {
                view.suspects
                    .entry(target.to_string())
                    .or_default()
                    .insert(reporter.to_string(), value.to_string());
            } else if let Some(name) = key.strip_prefix(&members_prefix) {
                view.members.insert(name.to_string(), value.to_string());
            } else if let Some(shard) = key
                .strip_prefix(&shards_prefix)
                .and_then(|s| s.parse::<u32>().ok())
            {
                view.claims.insert(
                    shard,
                    Claim {
                        node: value.to_string(),
                        epoch: kv.create_revision(),
                        lease: kv.lease(),
                    },
                );
            }
        }
        Ok(view)
    }

    /// The address and epoch of `shard`'s owner, if a live member other
    /// than `me` claims it.
    pub(crate) fn remote(&self, shard: u32, me: &str) -> Option<(String, i64)> {
        let claim = self.claims.get(&shard).filter(|c| c.node != me)?;
        let address = self.members.get(&claim.node)?;
        Some((address.clone(), claim.epoch))
    }
}

impl View {
    /// Whether a majority of the live members (`node` counted among them,
    /// member or not) report that they cannot reach `node` at `address`: it
    /// is voted out, and must not serve. Reports by nodes that are not live
    /// members do not count, nor reports of another address (a process of
    /// the same name before a restart); a node that only one peer of three
    /// cannot reach is never voted out.
    pub(crate) fn voted_out(&self, node: &str, address: &str) -> bool {
        let Some(reports) = self.suspects.get(node) else {
            return false;
        };
        let voters = reports
            .iter()
            .filter(|(r, a)| *r != node && *a == address && self.members.contains_key(*r))
            .count();
        let electorate = self.members.keys().filter(|m| *m != node).count() + 1;
        voters * 2 > electorate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members, and reports (target, reporter) of the target's address
    /// "here".
    fn view(members: &[&str], reports: &[(&str, &str)]) -> View {
        let mut view = View::default();
        for m in members {
            view.members.insert(m.to_string(), String::new());
        }
        for (target, reporter) in reports {
            view.suspects
                .entry(target.to_string())
                .or_default()
                .insert(reporter.to_string(), "here".to_string());
        }
        view
    }

    fn out(view: &View, node: &str) -> bool {
        view.voted_out(node, "here")
    }

    #[test]
    fn a_node_is_voted_out_by_a_majority_of_the_live_members_only() {
        // Cut off from both peers: out.
        assert!(out(&view(&["a", "b", "c"], &[("c", "a"), ("c", "b")]), "c"));
        // One peer cannot reach it (and it cannot reach that peer): neither is out.
        let one_link = view(&["a", "b", "c"], &[("c", "b"), ("b", "c")]);
        assert!(!out(&one_link, "c") && !out(&one_link, "b"));
        // Two nodes: nobody has a majority over the other.
        let pair = view(&["a", "b"], &[("a", "b"), ("b", "a")]);
        assert!(!out(&pair, "a") && !out(&pair, "b"));
        // Reports from nodes that are no longer members do not count.
        assert!(!out(
            &view(&["a", "b", "c"], &[("c", "a"), ("c", "x")]),
            "c"
        ));
        // A node that has left the members (it fenced itself) stays out
        // while the reports stand: it counts itself in the electorate.
        assert!(out(&view(&["a", "b"], &[("c", "a"), ("c", "b")]), "c"));
        // Five nodes: two reports are not a majority, three are.
        let five = ["a", "b", "c", "d", "e"];
        assert!(!out(&view(&five, &[("e", "a"), ("e", "b")]), "e"));
        assert!(out(
            &view(&five, &[("e", "a"), ("e", "b"), ("e", "c")]),
            "e"
        ));
        // Reports of the address a process of that name had before a
        // restart do not count against the new one.
        let before = view(&["a", "b", "c"], &[("c", "a"), ("c", "b")]);
        assert!(!before.voted_out("c", "elsewhere"));
    }
}
