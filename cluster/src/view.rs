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

/// The live members (name to address) and the shard claims.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) members: BTreeMap<String, String>,
    pub(crate) claims: HashMap<u32, Claim>,
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
        let mut view = View::default();
        for kv in response.kvs() {
            let (Ok(key), Ok(value)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            if let Some(name) = key.strip_prefix(&members_prefix) {
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
