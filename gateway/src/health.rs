//! `launcher-gateway health`: probes the local gateway for container health checks. It sends
//! `GET /status` to the configured TCP listener, plain or TLS as `enable-ssl` says (busybox
//! `wget` in the images speaks no TLS), or to the unix socket of a gateway that serves only
//! there, and reports the HTTP status code.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ProbeError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::config::GatewayConfig;

/// Most of an answer the probe reads: the status line is all it needs.
const MAX_ANSWER: u64 = 64 * 1024;

/// The address a local client reaches the TCP listener on: loopback for a wildcard bind.
pub fn local_target(config: &GatewayConfig) -> String {
    let host = match config.server.address.trim() {
        "" | "0.0.0.0" | "*" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        a if a.contains(':') && !a.starts_with('[') => format!("[{a}]"),
        a => a.to_string(),
    };
    format!("{host}:{}", config.server.port)
}

/// Sends `GET /status` to the local gateway and returns the HTTP status code, within `limit`.
pub async fn probe(config: &GatewayConfig, limit: Duration) -> Result<u16, ProbeError> {
    if !config.tcp {
        let path = config
            .server
            .unix_socket
            .as_ref()
            .ok_or_else(|| ProbeError("the gateway serves neither TCP nor a unix socket".into()))?;
        let probe = async {
            let s = UnixStream::connect(path).await.map_err(|e| {
                ProbeError(format!(
                    "cannot connect to the gateway at {}: {e}",
                    path.display()
                ))
            })?;
            get_status(s).await
        };
        return tokio::time::timeout(limit, probe).await.map_err(|_| {
            ProbeError(format!(
                "the gateway at {} did not answer within {limit:?}",
                path.display()
            ))
        })?;
    }
    let target = local_target(config);
    tokio::time::timeout(limit, probe_inner(config, &target))
        .await
        .map_err(|_| ProbeError(format!("the gateway at {target} did not answer within {limit:?}")))?
}

async fn probe_inner(config: &GatewayConfig, target: &str) -> Result<u16, ProbeError> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| ProbeError(format!("cannot connect to the gateway at {target}: {e}")))?;
    if !config.server.enable_ssl {
        return get_status(tcp).await;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError(format!("TLS client set-up: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").expect("a valid name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .map_err(|e| ProbeError(format!("TLS handshake with the gateway at {target} failed: {e}")))?;
    get_status(stream).await
}

async fn get_status<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<u16, ProbeError> {
    s.write_all(
        b"GET /status HTTP/1.1\r\nHost: localhost\r\nUser-Agent: launcher-gateway-health\r\n\
          Connection: close\r\n\r\n",
    )
    .await?;
    s.flush().await?;
    let mut answer = Vec::new();
    // The status line comes first; a connection closed without a TLS close_notify is fine here.
    let _ = s.take(MAX_ANSWER).read_to_end(&mut answer).await;
    let line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| ProbeError(format!("not an HTTP answer: {:?}", line.trim_end())))?;
    Ok(code)
}

/// Accepts the gateway's own certificate whatever it names: the probe checks that the local
/// listener serves, not who it is (it never sends a token or reads data).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        let mut c = GatewayConfig::new(std::path::PathBuf::from("/etc/rstudio"));
        c.server.port = 5559;
        c.server.address = "0.0.0.0".into();
        assert_eq!(local_target(&c), "127.0.0.1:5559");
        c.server.address = "::".into();
        assert_eq!(local_target(&c), "[::1]:5559");
        c.server.address = "10.1.2.3".into();
        assert_eq!(local_target(&c), "10.1.2.3:5559");
        c.server.address = "fe80::1".into();
        assert_eq!(local_target(&c), "[fe80::1]:5559");
    }

    #[tokio::test]
    async fn reads_the_status_code_of_a_plain_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = GatewayConfig::new(std::path::PathBuf::from("/etc/rstudio"));
        c.server.address = "127.0.0.1".into();
        c.server.port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /status HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(probe(&c, Duration::from_secs(5)).await.unwrap(), 503);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_socket_only_gateway_is_probed_on_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gw.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let mut c = GatewayConfig::new(dir.path().to_path_buf());
        c.tcp = false;
        c.server.unix_socket = Some(path);
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /status HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        assert_eq!(probe(&c, Duration::from_secs(5)).await.unwrap(), 200);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn probes_over_tls_whatever_the_certificate_names() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["launcher.example".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(crate::listeners::tls_config(&cert, &key).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut c = GatewayConfig::new(dir.path().to_path_buf());
        c.server.address = "0.0.0.0".into();
        c.server.port = listener.local_addr().unwrap().port();
        c.server.enable_ssl = true;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = acceptor.accept(tcp).await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /status HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await
                .unwrap();
            s.shutdown().await.unwrap();
        });
        assert_eq!(probe(&c, Duration::from_secs(5)).await.unwrap(), 200);
        server.await.unwrap();
    }
}
