//! TLS toward the center. Before enrollment the agent trusts nothing but the pin in its join
//! token: [`PinVerifier`] finds, in the chain the center sends, the root whose public key
//! hashes to the pin, then verifies the chain to that root as usual; a center without it
//! fails the handshake, before the agent has sent a byte of its own. Once enrolled the agent
//! trusts only the root it stored, and shows its own certificate.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::identity::Identity;

/// Lowercase hex sha256 of a certificate's SubjectPublicKeyInfo.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let digest = Sha256::digest(cert.subject_public_key_info().as_ref());
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Checks the center's chain against a pin; remembers the pins it saw instead, for the error.
#[derive(Debug)]
pub struct PinVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
    /// The pins of the certificates a center sent that matched nothing.
    seen: Mutex<Option<Vec<String>>>,
}

impl PinVerifier {
    pub fn new(pin: &str) -> Arc<PinVerifier> {
        Arc::new(PinVerifier {
            pin: pin.to_ascii_lowercase(),
            provider: provider(),
            seen: Mutex::new(None),
        })
    }

    /// The pins the center presented when none matched.
    pub fn mismatch(&self) -> Option<Vec<String>> {
        self.seen.lock().unwrap().clone()
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pins: Vec<Option<String>> = intermediates.iter().map(spki_pin).collect();
        let Some(root) = intermediates
            .iter()
            .zip(&pins)
            .find(|(_, pin)| pin.as_deref() == Some(self.pin.as_str()))
            .map(|(cert, _)| cert.clone().into_owned())
        else {
            *self.seen.lock().unwrap() = Some(pins.into_iter().flatten().collect());
            return Err(rustls::Error::General(
                "the center's certificate authority does not match the join token's pin".into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(root)
            .map_err(|e| rustls::Error::General(format!("the pinned root: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3 for enrollment: the center checked against `verifier`'s pin, no client certificate.
pub fn enroll_config(verifier: Arc<PinVerifier>) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Mutual TLS 1.3 for the link: only the stored root is trusted, the agent's certificate and
/// key are shown.
pub fn link_config(identity: &Identity) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(identity.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the stored center root: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("the stored center root: {e}"))?;
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the stored certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| format!("the stored key: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the stored certificate and key: {e}"))?;
    Ok(Arc::new(config))
}
