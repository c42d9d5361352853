//! TLS between nodes: TLS 1.3 only, both sides authenticated by a
//! certificate from the cluster's CA, through rustls with its default
//! certificate and name checks.

use crate::ClusterError;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

/// The TLS settings of a node: the cluster's CA, and this node's
/// certificate and private key, for [`Config::tls`](crate::Config::tls).
///
/// Every connection between nodes is then TLS 1.3, and both ends prove
/// themselves: each presents its certificate, which must chain to the CA
/// and be valid now, and the dialing node checks that the certificate of
/// the node it dials names the host of that node's advertised address (an
/// IP address or a DNS name in its subject alternative names). The checks
/// are rustls' defaults. The cluster secret is still proved, inside TLS.
///
/// ```
/// use gen_registry_cluster::Tls;
///
/// // A CA and a certificate for a node reached at 127.0.0.1 (made here with
/// // rcgen; in production, with your own CA or `openssl`, see the guide).
/// let ca_key = rcgen::KeyPair::generate().unwrap();
/// let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
/// ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
/// let ca = ca.self_signed(&ca_key).unwrap();
/// let node_key = rcgen::KeyPair::generate().unwrap();
/// let node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
///     .unwrap()
///     .signed_by(&node_key, &ca, &ca_key)
///     .unwrap();
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = |name: &str| dir.path().join(name);
/// std::fs::write(path("ca.pem"), ca.pem()).unwrap();
/// std::fs::write(path("node.pem"), node.pem()).unwrap();
/// std::fs::write(path("node.key"), node_key.serialize_pem()).unwrap();
///
/// let tls = Tls::from_pem_files(path("ca.pem"), path("node.pem"), path("node.key")).unwrap();
/// # let _ = tls;
/// // A missing file is a clear error, not a panic.
/// assert!(Tls::from_pem_files(path("none.pem"), path("node.pem"), path("node.key")).is_err());
/// ```
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Config(format!("TLS: {what}: {e}"))
}

impl Tls {
    /// Reads the CA certificate(s), this node's certificate chain (its own
    /// certificate first) and its private key (PKCS#8, PKCS#1 or SEC1) from
    /// PEM files.
    ///
    /// ```
    /// use gen_registry_cluster::{ClusterError, Tls};
    /// let e = Tls::from_pem_files("/no/ca.pem", "/no/node.pem", "/no/node.key").unwrap_err();
    /// assert!(matches!(e, ClusterError::Config(_)));
    /// assert!(e.to_string().contains("/no/ca.pem"));
    /// ```
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Tls, ClusterError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| bad(&format!("cannot read {}", path.display()), e))
        };
        Tls::from_pem(
            &read(ca.as_ref())?,
            &read(cert.as_ref())?,
            &read(key.as_ref())?,
        )
    }

    /// The same from PEM text in memory.
    ///
    /// ```
    /// use gen_registry_cluster::Tls;
    /// let e = Tls::from_pem(b"not a PEM", b"", b"").unwrap_err();
    /// assert!(e.to_string().contains("CA"));
    /// ```
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Tls, ClusterError> {
        let certs = |pem: &[u8], what: &str| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(what, e))?;
            if certs.is_empty() {
                return Err(bad(what, "no certificate in the PEM text"));
            }
            Ok(certs)
        };
        let mut roots = RootCertStore::empty();
        for c in certs(ca, "the CA certificate")? {
            roots.add(c).map_err(|e| bad("the CA certificate", e))?;
        }
        let roots = Arc::new(roots);
        let chain = certs(cert, "the node certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("the node key", e))?;
        let provider = Arc::new(aws_lc_rs::default_provider());
        let versions = [&rustls::version::TLS13];
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| bad("the client settings", e))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad("the node certificate and key", e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| bad("the CA certificate", e))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| bad("the server settings", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| bad("the node certificate and key", e))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// The client's side of the TLS handshake with the node advertised at
    /// `address` (`host:port`), whose certificate must name `host`.
    pub(crate) async fn connect(
        &self,
        address: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let host = match address.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => address,
        };
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        };
        self.connector.connect(name, stream).await
    }

    /// The server's side of the TLS handshake.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
    ) -> io::Result<server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }
}

/// Whether `e` is a refusal by TLS (a certificate that does not check, an
/// alert from the peer) rather than a failure of the network.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}
