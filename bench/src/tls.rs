//! The TLS scenarios' certificates: made once per comparison by the driver (rcgen, through
//! micro-test-support's [`Pki`]) in a temporary directory that it passes to the server and
//! load processes (`--tls DIR`). Both sides of both scenarios use the same files: mutual TLS,
//! the server named `bench`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use micro::tls::{ClientAuth, ClientTls, ServerTls};
use micro_test_support::certs::Pki;

/// The name in the server's certificate, which clients verify.
pub const SERVER_NAME: &str = "bench";

/// Makes the CA, the server's and the client's certificates (kept while the value lives).
pub fn make() -> anyhow::Result<Pki> {
    let pki = Pki::new()?;
    pki.issue("server", &[SERVER_NAME, "127.0.0.1"], false)?;
    pki.issue("client", &["bench-load"], false)?;
    Ok(pki)
}

/// Makes the certificates ([`make`]) and copies them into `dir`.
pub fn write_to(dir: &Path) -> anyhow::Result<()> {
    let pki = make()?;
    std::fs::create_dir_all(dir)?;
    for file in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
    ] {
        std::fs::copy(pki.dir().join(file), dir.join(file))
            .with_context(|| format!("copying {file} to {}", dir.display()))?;
    }
    Ok(())
}

/// The files in a directory made by [`make`].
#[derive(Clone, Debug)]
pub struct Files {
    /// The CA bundle.
    pub ca: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's key.
    pub server_key: PathBuf,
    /// The client's certificate.
    pub client_cert: PathBuf,
    /// The client's key.
    pub client_key: PathBuf,
}

impl Files {
    /// The files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Files {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// micro's server side: mTLS, client certificates required.
    pub fn micro_server(&self) -> ServerTls {
        ServerTls::new(&self.server_cert, &self.server_key)
            .client_ca(&self.ca, ClientAuth::Required)
    }

    /// micro's client side: the CA, the client certificate, the server's name.
    pub fn micro_client(&self) -> ClientTls {
        ClientTls::new(&self.ca)
            .identity(&self.client_cert, &self.client_key)
            .server_name(SERVER_NAME)
    }

    /// tonic's server side, the same files.
    pub fn tonic_server(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&self.server_cert)?,
            std::fs::read(&self.server_key)?,
        );
        Ok(tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(tonic::transport::Certificate::from_pem(std::fs::read(
                &self.ca,
            )?)))
    }

    /// tonic's client side, the same files.
    pub fn tonic_client(&self) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(&self.client_cert)?,
            std::fs::read(&self.client_key)?,
        );
        Ok(tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(
                &self.ca,
            )?))
            .identity(identity)
            .domain_name(SERVER_NAME))
    }
}
