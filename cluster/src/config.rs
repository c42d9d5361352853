use crate::{ClusterError, Tls};
use std::net::SocketAddr;
use std::time::Duration;

/// How a node joins its cluster: its name, etcd's endpoints, the cluster
/// secret, and the timing that bounds failover and fencing.
///
/// The lease TTL is how long etcd keeps a silent node's shards: failover takes
/// about one TTL. The fence margin is how much earlier than that a node that
/// could not renew its lease stops serving: it fences itself at
/// `last acknowledged renewal (as sent) + TTL − margin`, so the guarantee of
/// one live worker per id holds as long as no process pause or clock-rate
/// difference between this node and etcd exceeds the margin.
///
/// ```
/// use gen_registry_cluster::Config;
/// use std::time::Duration;
///
/// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared secret")
///     .listen("127.0.0.1:7400".parse().unwrap())
///     .lease_ttl(Duration::from_secs(5))
///     .fence_margin(Duration::from_secs(2))
///     .shards(256);
/// assert_eq!(config.get_lease_ttl(), Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) name: String,
    pub(crate) etcd: Vec<String>,
    pub(crate) etcd_options: Option<etcd_client::ConnectOptions>,
    pub(crate) prefix: String,
    pub(crate) listen: SocketAddr,
    pub(crate) advertise: Option<String>,
    pub(crate) secret: Vec<u8>,
    pub(crate) tls: Option<Tls>,
    pub(crate) shards: u32,
    pub(crate) lease_ttl: Duration,
    pub(crate) fence_margin: Duration,
    pub(crate) call_timeout: Duration,
    pub(crate) max_frame: usize,
    pub(crate) max_workers: Option<usize>,
}

impl Config {
    /// A node named `name` (unique among live nodes, without `/`), using
    /// the etcd `endpoints`, proving `secret` to its peers: the same on
    /// every node, and **at least 16 bytes** (a shorter one fails
    /// [`Cluster::join`](crate::Cluster::join) with
    /// [`ClusterError::Config`]). Defaults: listens on
    /// 127.0.0.1 on a free port, 64 shards, a 5 s lease TTL, a 2 s fence
    /// margin, 5 s calls, 4 MiB frames, keys under `gen_registry_cluster/`.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("node-a", ["http://127.0.0.1:2379"], "a long shared secret");
    /// assert_eq!(config.get_shards(), 64);
    /// ```
    pub fn new<E: Into<String>>(
        name: impl Into<String>,
        endpoints: impl IntoIterator<Item = E>,
        secret: impl AsRef<[u8]>,
    ) -> Self {
        Config {
            name: name.into(),
            etcd: endpoints.into_iter().map(Into::into).collect(),
            etcd_options: None,
            prefix: "gen_registry_cluster".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            secret: secret.as_ref().to_vec(),
            tls: None,
            shards: 64,
            lease_ttl: Duration::from_secs(5),
            fence_margin: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
            max_frame: 4 << 20,
            max_workers: None,
        }
    }

    /// etcd's own connection settings (user and password, TLS with the
    /// `etcd-client` crate's `tls` feature, timeouts), passed through.
    ///
    /// ```
    /// use gen_registry_cluster::{Config, etcd_client::ConnectOptions};
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret")
    ///     .etcd_options(ConnectOptions::new().with_user("registry", "password"));
    /// # let _ = config;
    /// ```
    pub fn etcd_options(mut self, options: etcd_client::ConnectOptions) -> Self {
        self.etcd_options = Some(options);
        self
    }

    /// The etcd key prefix of this cluster (several clusters can share an
    /// etcd under different prefixes).
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").prefix("sessions");
    /// # let _ = config;
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Where this node accepts calls from its peers (port 0: a free port).
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").listen("127.0.0.2:0".parse().unwrap());
    /// # let _ = config;
    /// ```
    pub fn listen(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    /// The address peers dial, if not the listening address (behind NAT).
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").advertise("10.0.0.7:7400");
    /// # let _ = config;
    /// ```
    pub fn advertise(mut self, address: impl Into<String>) -> Self {
        self.advertise = Some(address.into());
        self
    }

    /// Connections between nodes use TLS 1.3 with these certificates, both
    /// ends authenticated (see [`Tls`]). Every node of a cluster must use
    /// TLS, with certificates from the same CA, or none.
    ///
    /// Without it, connections are plain TCP: the cluster secret's
    /// challenge keeps out peers that do not know it, but what crosses the
    /// network is neither encrypted nor protected against tampering. That
    /// is for a development cluster on a trusted network only.
    ///
    /// ```no_run
    /// use gen_registry_cluster::{Config, Tls};
    /// # fn main() -> Result<(), gen_registry_cluster::ClusterError> {
    /// let tls = Tls::from_pem_files("/etc/registry/ca.pem", "/etc/registry/node.pem", "/etc/registry/node.key")?;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").tls(tls);
    /// assert!(config.uses_tls());
    /// # Ok(()) }
    /// ```
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Whether connections between nodes use TLS ([`Config::tls`]).
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// assert!(!Config::new("a", ["http://127.0.0.1:2379"], "s").uses_tls());
    /// ```
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The number of shards, used if this node creates the cluster; every
    /// node must be given the number the cluster was created with.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").shards(1024);
    /// assert_eq!(config.get_shards(), 1024);
    /// ```
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// The etcd lease's TTL (whole seconds, at least 2, and more than the
    /// fence margin by a quarter of itself: see
    /// [`fence_margin`](Config::fence_margin)).
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// use std::time::Duration;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").lease_ttl(Duration::from_secs(10));
    /// assert_eq!(config.get_lease_ttl(), Duration::from_secs(10));
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long before its lease could expire a node that cannot renew it
    /// stops serving: above zero and at most 3/4 of the lease TTL (the
    /// node must keep a quarter of the TTL to renew in), else
    /// [`Cluster::join`](crate::Cluster::join) fails with
    /// [`ClusterError::Config`].
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// use std::time::Duration;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").fence_margin(Duration::from_millis(1500));
    /// assert_eq!(config.get_fence_margin(), Duration::from_millis(1500));
    /// ```
    pub fn fence_margin(mut self, margin: Duration) -> Self {
        self.fence_margin = margin;
        self
    }

    /// The timeout of [`Cluster::call`](crate::Cluster::call) and the other
    /// routed operations, retries included.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// use std::time::Duration;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").call_timeout(Duration::from_secs(2));
    /// # let _ = config;
    /// ```
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The largest frame this node accepts from a peer (a larger one is
    /// answered with an error and its connection closed), and sends to one:
    /// a larger request fails with [`ClusterError::Codec`] before it is
    /// sent, a larger reply is answered as the worker's error. Give every
    /// node the same limit.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").max_frame(1 << 20);
    /// # let _ = config;
    /// ```
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// The most workers this node runs at once, over all the shards it
    /// serves (default: no limit). A call or cast that would start one
    /// more fails with [`Failure::AtCapacity`](crate::Failure::AtCapacity)
    /// naming this node; calls to running workers are unaffected. It is
    /// the node's limit, unlike
    /// [`Options::max_workers`](gen_registry::Options::max_workers), which
    /// bounds (and evicts within) each shard's registry.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// let config = Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").max_workers(10_000);
    /// assert_eq!(config.get_max_workers(), Some(10_000));
    /// ```
    pub fn max_workers(mut self, workers: usize) -> Self {
        self.max_workers = Some(workers);
        self
    }

    /// The node's worker limit, if any.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// assert_eq!(Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").get_max_workers(), None);
    /// ```
    pub fn get_max_workers(&self) -> Option<usize> {
        self.max_workers
    }

    /// The shard count this node was given.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// assert_eq!(Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").get_shards(), 64);
    /// ```
    pub fn get_shards(&self) -> u32 {
        self.shards
    }

    /// The lease TTL.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// use std::time::Duration;
    /// assert_eq!(Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").get_lease_ttl(), Duration::from_secs(5));
    /// ```
    pub fn get_lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// The fence margin.
    ///
    /// ```
    /// use gen_registry_cluster::Config;
    /// use std::time::Duration;
    /// assert_eq!(Config::new("a", ["http://127.0.0.1:2379"], "a long shared secret").get_fence_margin(), Duration::from_secs(2));
    /// ```
    pub fn get_fence_margin(&self) -> Duration {
        self.fence_margin
    }

    pub(crate) fn validate(&self) -> Result<(), ClusterError> {
        let bad = |m: &str| Err(ClusterError::Config(m.to_string()));
        if self.name.is_empty() || self.name.contains('/') {
            return bad("the node name must be non-empty and contain no '/'");
        }
        if self.etcd.is_empty() {
            return bad("give at least one etcd endpoint");
        }
        if self.secret.len() < 16 {
            return bad("the cluster secret must be at least 16 bytes");
        }
        if self.shards == 0 {
            return bad("the shard count must be at least 1");
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl.subsec_nanos() != 0 {
            return bad(
                "the lease TTL must be whole seconds, at least 2 (etcd's unit and minimum)",
            );
        }
        if self.fence_margin.is_zero() || self.fence_margin * 4 > self.lease_ttl * 3 {
            return bad("the fence margin must be above zero and at most 3/4 of the lease TTL");
        }
        if self.call_timeout.is_zero() {
            return bad("the call timeout must be above zero");
        }
        if self.max_frame < 1024 {
            return bad("the frame limit must be at least 1 KiB");
        }
        Ok(())
    }
}
