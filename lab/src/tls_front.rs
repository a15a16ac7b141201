//! [`TlsFront`]: a TLS listener on loopback that forwards each connection, decrypted, to a local
//! plain-TCP server. It gives a peer without TLS of its own (s3s-fs) an HTTPS endpoint whose
//! certificate is signed by a throwaway CA, so that clients' CA handling is tested against the real
//! server behind it.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::pki::ServingPki;

/// A running TLS front, stopped on drop.
#[derive(Debug)]
pub struct TlsFront {
    port: u16,
    ca_cert: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Listens on an ephemeral loopback port with a certificate for `127.0.0.1` and `localhost`,
    /// forwarding to `127.0.0.1:<backend_port>`.
    pub async fn start(name: &str, backend_port: u16) -> anyhow::Result<Self> {
        let pki = ServingPki::generate(name, &["127.0.0.1", "localhost"])?;
        let chain = CertificateDer::pem_slice_iter(pki.serving_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("the serving certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(pki.serving_key.as_bytes()).context("the serving key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A failed handshake (an untrusting client hangs up) ends only that connection.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    if let Ok(mut backend) =
                        TcpStream::connect((Ipv4Addr::LOCALHOST, backend_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                    }
                });
            }
        });
        Ok(Self {
            port,
            ca_cert: pki.ca_cert,
            task,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The PEM certificate of the CA that signed the front's certificate.
    pub fn ca_cert(&self) -> &str {
        &self.ca_cert
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}
