//! TLS options of a service (micro-rs additions: go-micro's flags have no TLS): the server's
//! certificate and client CA, the client's mode, CA, certificate and server name, and etcd's
//! CA and client certificate, as flags and `MICRO_*` variables and as builder methods.

use std::{path::PathBuf, time::Duration};

use micro_core::tls::{ClientAuth, ClientTls, Identity, ServerTls, TlsMode};
use micro_registry::EtcdTls;

use super::{Service, ServiceError};

/// The TLS flags, part of [`Flags`](crate::Flags): the server's, the client's and etcd's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsFlags {
    /// The server's TLS.
    #[command(flatten)]
    pub server: ServerTlsFlags,
    /// The client's TLS.
    #[command(flatten)]
    pub client: ClientTlsFlags,
    /// etcd's TLS.
    #[command(flatten)]
    pub registry: RegistryTlsFlags,
    /// How often certificate files are checked for changes, a duration (default 5s).
    #[arg(long = "tls_reload_interval", env = "MICRO_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Option<Duration>,
}

/// The server's TLS flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServerTlsFlags {
    /// Serve TLS with this PEM certificate chain (with --server_tls_key).
    #[arg(long = "server_tls_cert", env = "MICRO_SERVER_TLS_CERT")]
    pub server_tls_cert: Option<PathBuf>,
    /// The PEM private key of --server_tls_cert.
    #[arg(long = "server_tls_key", env = "MICRO_SERVER_TLS_KEY")]
    pub server_tls_key: Option<PathBuf>,
    /// Ask clients for a certificate signed by this PEM CA bundle (mutual TLS).
    #[arg(long = "server_tls_client_ca", env = "MICRO_SERVER_TLS_CLIENT_CA")]
    pub server_tls_client_ca: Option<PathBuf>,
    /// With a client CA: `required` (default) or `optional`.
    #[arg(long = "server_tls_client_auth", env = "MICRO_SERVER_TLS_CLIENT_AUTH", value_parser = parse::<ClientAuth>)]
    pub server_tls_client_auth: Option<ClientAuth>,
}

/// The client's TLS flags (global in the `micro` command, so they go after a subcommand too).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientTlsFlags {
    /// Which nodes the client dials with TLS: `auto` (default: nodes marked secure, port 443,
    /// https://), `always` or `never`.
    #[arg(long = "client_tls", env = "MICRO_CLIENT_TLS", value_parser = parse::<TlsMode>, global = true)]
    pub client_tls: Option<TlsMode>,
    /// PEM CA bundle servers' certificates must chain to (default: the system's roots).
    #[arg(long = "client_tls_ca", env = "MICRO_CLIENT_TLS_CA", global = true)]
    pub client_tls_ca: Option<PathBuf>,
    /// The client's PEM certificate chain for mutual TLS (with --client_tls_key).
    #[arg(long = "client_tls_cert", env = "MICRO_CLIENT_TLS_CERT", global = true)]
    pub client_tls_cert: Option<PathBuf>,
    /// The PEM private key of --client_tls_cert.
    #[arg(long = "client_tls_key", env = "MICRO_CLIENT_TLS_KEY", global = true)]
    pub client_tls_key: Option<PathBuf>,
    /// The name servers' certificates must carry (default: the node's host, an IP address).
    #[arg(
        long = "client_tls_server_name",
        env = "MICRO_CLIENT_TLS_SERVER_NAME",
        global = true
    )]
    pub client_tls_server_name: Option<String>,
    /// Accept any server certificate, unverified: for debugging only.
    #[arg(
        long = "client_tls_dangerous_skip_verify",
        env = "MICRO_CLIENT_TLS_DANGEROUS_SKIP_VERIFY",
        value_parser = parse_bool,
        global = true
    )]
    pub client_tls_dangerous_skip_verify: Option<bool>,
}

/// etcd's TLS flags (global in the `micro` command).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryTlsFlags {
    /// PEM CA bundle of the etcd registry's certificate: connects to etcd over TLS.
    #[arg(long = "registry_tls_ca", env = "MICRO_REGISTRY_TLS_CA", global = true)]
    pub registry_tls_ca: Option<PathBuf>,
    /// PEM client certificate for etcd's --client-cert-auth (with --registry_tls_key).
    #[arg(
        long = "registry_tls_cert",
        env = "MICRO_REGISTRY_TLS_CERT",
        global = true
    )]
    pub registry_tls_cert: Option<PathBuf>,
    /// The PEM private key of --registry_tls_cert.
    #[arg(
        long = "registry_tls_key",
        env = "MICRO_REGISTRY_TLS_KEY",
        global = true
    )]
    pub registry_tls_key: Option<PathBuf>,
}

fn parse<T: std::str::FromStr<Err = micro_core::tls::TlsError>>(value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|err: micro_core::tls::TlsError| err.to_string())
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("{value:?}: want true or false")),
    }
}

fn options(message: String) -> ServiceError {
    ServiceError::Options(message)
}

/// Both halves of a pair, or neither.
fn pair(
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
    flag: &str,
) -> Result<Option<Identity>, ServiceError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(Identity::new(cert, key))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(options(format!(
            "--{flag}_cert is set without --{flag}_key"
        ))),
        (None, Some(_)) => Err(options(format!(
            "--{flag}_key is set without --{flag}_cert"
        ))),
    }
}

impl TlsFlags {
    /// The server's TLS the flags ask for, if any.
    pub fn server(&self) -> Result<Option<ServerTls>, ServiceError> {
        let mut tls = self.server.server()?;
        if let (Some(tls), Some(interval)) = (&mut tls, self.tls_reload_interval) {
            tls.reload_interval = Some(interval);
        }
        Ok(tls)
    }

    /// The flags' changes to the client's TLS `base`.
    pub fn client(&self, base: ClientTls) -> Result<ClientTls, ServiceError> {
        let mut tls = self.client.client(base)?;
        if let Some(interval) = self.tls_reload_interval {
            tls.reload_interval = Some(interval);
        }
        Ok(tls)
    }

    /// etcd's TLS the flags ask for, if any.
    pub fn registry(&self) -> Result<Option<EtcdTls>, ServiceError> {
        self.registry.registry()
    }
}

impl ServerTlsFlags {
    /// The server's TLS the flags ask for, if any.
    pub fn server(&self) -> Result<Option<ServerTls>, ServiceError> {
        let Some(identity) = pair(
            self.server_tls_cert.as_ref(),
            self.server_tls_key.as_ref(),
            "server_tls",
        )?
        else {
            if self.server_tls_client_ca.is_some() {
                return Err(options(
                    "--server_tls_client_ca needs --server_tls_cert and --server_tls_key".into(),
                ));
            }
            return Ok(None);
        };
        let mut tls = ServerTls::new(identity.cert, identity.key);
        if let Some(ca) = &self.server_tls_client_ca {
            tls = tls.client_ca(ca, self.server_tls_client_auth.unwrap_or_default());
        }
        Ok(Some(tls))
    }
}

impl ClientTlsFlags {
    /// Whether any of these flags is set.
    pub fn is_set(&self) -> bool {
        self.client_tls.is_some()
            || self.client_tls_ca.is_some()
            || self.client_tls_cert.is_some()
            || self.client_tls_key.is_some()
            || self.client_tls_server_name.is_some()
            || self.client_tls_dangerous_skip_verify.is_some()
    }

    /// The flags' changes to the client's TLS `base`.
    pub fn client(&self, mut base: ClientTls) -> Result<ClientTls, ServiceError> {
        if let Some(mode) = self.client_tls {
            base.mode = mode;
        }
        if let Some(ca) = &self.client_tls_ca {
            base.ca = Some(ca.clone());
        }
        if let Some(identity) = pair(
            self.client_tls_cert.as_ref(),
            self.client_tls_key.as_ref(),
            "client_tls",
        )? {
            base.identity = Some(identity);
        }
        if let Some(name) = &self.client_tls_server_name {
            base.server_name = Some(name.clone());
        }
        if let Some(skip) = self.client_tls_dangerous_skip_verify {
            base.dangerous_skip_verification = skip;
        }
        Ok(base)
    }
}

impl RegistryTlsFlags {
    /// etcd's TLS the flags ask for, if any.
    pub fn registry(&self) -> Result<Option<EtcdTls>, ServiceError> {
        let identity = pair(
            self.registry_tls_cert.as_ref(),
            self.registry_tls_key.as_ref(),
            "registry_tls",
        )?;
        match (&self.registry_tls_ca, identity) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(options(
                "--registry_tls_cert needs --registry_tls_ca (etcd's CA bundle)".into(),
            )),
            (Some(ca), identity) => {
                let mut tls = EtcdTls::new(ca);
                tls.identity = identity.map(|i| (i.cert, i.key));
                Ok(Some(tls))
            }
        }
    }
}

impl Service {
    /// Serves TLS, and with a client CA mutual TLS (`MICRO_SERVER_TLS_*`, micro-rs
    /// addition); the node's metadata then says `secure: "true"`, so micro-rs clients dial it
    /// with TLS.
    ///
    /// ```no_run
    /// use micro::tls::{ClientAuth, ServerTls};
    /// let service = micro::Service::new()
    ///     .name("greeter2")
    ///     .server_tls(ServerTls::new("greeter2.pem", "greeter2.key").client_ca("ca.pem", ClientAuth::Required));
    /// ```
    pub fn server_tls(mut self, tls: ServerTls) -> Self {
        self.server.options_mut().tls = Some(tls);
        self
    }

    /// The client's TLS (`MICRO_CLIENT_TLS_*`, micro-rs addition): which nodes it dials
    /// with TLS, the CA it trusts, its certificate, the server name.
    pub fn client_tls(mut self, tls: ClientTls) -> Self {
        self.configure_client("client_tls", |builder| builder.tls(tls));
        self
    }

    /// TLS for calls to `service` only, instead of [`Service::client_tls`].
    pub fn client_tls_for(mut self, service: impl Into<String>, tls: ClientTls) -> Self {
        let service = service.into();
        self.configure_client("client_tls_for", |builder| builder.tls_for(service, tls));
        self
    }

    /// Applies the TLS flags: the files are loaded once here, so a bad one is an error at
    /// start-up rather than on the first call.
    pub(crate) fn apply_tls(&mut self, flags: &TlsFlags) -> Result<(), ServiceError> {
        if let Some(tls) = flags.server()? {
            // Checked once, unwatched (the server loads and watches them when it starts).
            let check = ServerTls {
                reload_interval: None,
                ..tls.clone()
            };
            check
                .load()
                .map_err(|err| options(format!("server TLS: {err}")))?;
            self.server.options_mut().tls = Some(tls);
        }
        if flags.client.is_set() || flags.tls_reload_interval.is_some() {
            let mut error = None;
            self.configure_client("flags", |mut builder| {
                match flags.client(builder.options_mut().tls.clone()) {
                    Ok(tls) => {
                        // Only configured files are checked here: without a CA, loading reads
                        // the system's roots, which a client that never dials TLS may lack.
                        if (tls.ca.is_some() || tls.identity.is_some())
                            && let Err(err) = (ClientTls {
                                reload_interval: None,
                                ..tls.clone()
                            })
                            .load()
                        {
                            error = Some(options(format!("client TLS: {err}")));
                        }
                        builder.options_mut().tls = tls;
                    }
                    Err(err) => error = Some(err),
                }
                builder
            });
            if let Some(err) = error {
                return Err(err);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Flags;

    #[test]
    fn tls_flags_parse_and_pair() {
        let flags = Flags::try_parse_args([
            "svc",
            "--server_tls_cert=s.pem",
            "--server_tls_key=s.key",
            "--server_tls_client_ca=ca.pem",
            "--server_tls_client_auth=optional",
            "--client_tls=always",
            "--client_tls_ca=ca.pem",
            "--client_tls_server_name=greeter2",
            "--registry_tls_ca=etcd-ca.pem",
            "--tls_reload_interval=1s",
        ])
        .unwrap();
        let server = flags.tls.server().unwrap().unwrap();
        assert_eq!(server.client_ca.as_deref(), Some("ca.pem".as_ref()));
        assert_eq!(server.client_auth, super::ClientAuth::Optional);
        assert_eq!(
            server.reload_interval,
            Some(std::time::Duration::from_secs(1))
        );
        let client = flags.tls.client(Default::default()).unwrap();
        assert_eq!(client.mode, super::TlsMode::Always);
        assert_eq!(client.server_name.as_deref(), Some("greeter2"));
        assert!(!client.dangerous_skip_verification);
        assert!(flags.tls.registry().unwrap().is_some());

        let half = Flags::try_parse_args(["svc", "--server_tls_cert=s.pem"]).unwrap();
        let err = half.tls.server().unwrap_err().to_string();
        assert!(err.contains("server_tls_key"), "{err}");
        for (flag, value) in [
            ("--client_tls", "sometimes"),
            ("--server_tls_client_auth", "maybe"),
            ("--client_tls_dangerous_skip_verify", "yes"),
        ] {
            let arg = format!("{flag}={value}");
            let err = Flags::try_parse_args(["svc", arg.as_str()]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }
}
