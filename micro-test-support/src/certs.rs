//! Certificates made by the tests (rcgen), written as PEM files in a temporary directory:
//! a CA, server and client certificates it signs (valid, expired, for other names), and a
//! second, unrelated CA. Nothing is committed.
//!
//! ```no_run
//! let pki = micro_test_support::certs::Pki::new().unwrap();
//! let server = pki.server("greeter2").unwrap(); // names greeter2, localhost, 127.0.0.1
//! let client = pki.client("greeter1").unwrap();
//! println!("{} {} {}", pki.ca.display(), server.cert.display(), client.key.display());
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;

/// A certificate and its key as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate (leaf only).
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER (to compare with what a peer served).
    pub der: Vec<u8>,
}

/// A test CA in a temporary directory (removed when dropped).
pub struct Pki {
    /// The CA certificate, PEM: the bundle clients and servers trust.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: TempDir,
    name: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca", &self.ca)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// A new CA, `micro-rs test CA`.
    pub fn new() -> anyhow::Result<Self> {
        Pki::named("micro-rs test CA")
    }

    /// A new CA with this common name (e.g. a second, unrelated CA).
    pub fn named(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("micro-pki-").tempdir()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.pem())?;
        Ok(Pki {
            ca,
            issuer: Issuer::new(params, key),
            dir,
            name: name.to_owned(),
        })
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A server certificate for `name`, `localhost` and `127.0.0.1`, valid now.
    pub fn server(&self, name: &str) -> anyhow::Result<Pair> {
        self.issue(
            &format!("server-{name}"),
            &[name, "localhost", "127.0.0.1"],
            false,
        )
    }

    /// A client certificate with common name `name`, valid now.
    pub fn client(&self, name: &str) -> anyhow::Result<Pair> {
        self.issue(&format!("client-{name}"), &[name], false)
    }

    /// A server certificate for `name`, `localhost` and `127.0.0.1` that expired in 2021.
    pub fn expired_server(&self, name: &str) -> anyhow::Result<Pair> {
        self.issue(
            &format!("expired-{name}"),
            &[name, "localhost", "127.0.0.1"],
            true,
        )
    }

    /// A certificate (server and client use) with these names, written as `<file>.pem` and
    /// `<file>.key` (replacing files of that name: how tests rotate one).
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> anyhow::Result<Pair> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        let pair = Pair {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        // The key first, then the certificate, each by rename: a watcher never reads half
        // a file, and sees the pair complete once the certificate lands.
        write_atomically(&pair.key, key.serialize_pem().as_bytes())?;
        write_atomically(&pair.cert, cert.pem().as_bytes())?;
        Ok(pair)
    }
}

fn write_atomically(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
