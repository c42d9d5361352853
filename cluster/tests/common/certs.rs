//! Certificates made at test time with rcgen: a CA, and node certificates
//! signed by it (valid, or expired), written as PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use std::path::{Path, PathBuf};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("a CA certificate");
        Ca { cert, key }
    }

    /// Writes this CA's certificate, and a certificate of its own for a
    /// node on 127.0.0.`host` (expired if so asked) with its key, into
    /// `dir`; the `--tls-…` flags of `cluster-node` for them.
    pub fn node_files(&self, trusted: &Ca, dir: &Path, host: u8, expired: bool) -> Vec<String> {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(vec![format!("127.0.0.{host}")]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("node {host}"));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("a node certificate");
        let write = |name: &str, pem: String| -> String {
            let path: PathBuf = dir.join(format!("{host}-{name}"));
            std::fs::write(&path, pem).expect("written");
            path.display().to_string()
        };
        vec![
            "--tls-ca".into(),
            write("ca.pem", trusted.cert.pem()),
            "--tls-cert".into(),
            write("node.pem", cert.pem()),
            "--tls-key".into(),
            write("node.key", key.serialize_pem()),
        ]
    }
}
