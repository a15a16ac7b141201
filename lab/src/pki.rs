//! Throwaway credentials for one test cluster: a CA and the apiserver's serving certificate, the
//! service-account signing key and the admin bearer token.
//!
//! The serving certificate is made here rather than left to `--cert-dir` so the kubeconfig can carry
//! its CA before the apiserver has started, and so its SANs are known: `127.0.0.1` and `localhost`.

use std::fmt::Write as _;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files the apiserver and its clients need.
#[derive(Debug)]
pub struct ClusterPki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
    /// ECDSA P-256 in PKCS#8, for signing service-account tokens.
    pub service_account_key: String,
    /// Its public half (PKIX): the apiserver reads no public key from a PKCS#8 private key file.
    pub service_account_public_key: String,
    pub admin_token: String,
}

impl ClusterPki {
    pub fn generate() -> Result<Self, PkiError> {
        let serving = ServingPki::generate(
            "kube-apiserver",
            &["127.0.0.1", "localhost", "kubernetes.default.svc"],
        )?;
        let service_account_key = KeyPair::generate()?;
        Ok(Self {
            ca_cert: serving.ca_cert,
            serving_cert: serving.serving_cert,
            serving_key: serving.serving_key,
            service_account_key: service_account_key.serialize_pem(),
            service_account_public_key: service_account_key.public_key_pem(),
            admin_token: random_token()?,
        })
    }
}

/// A throwaway CA and one serving certificate it signed (PEM).
#[derive(Debug)]
pub struct ServingPki {
    pub ca_cert: String,
    pub serving_cert: String,
    pub serving_key: String,
}

impl ServingPki {
    /// A new CA, and a server certificate for `names` (DNS names or IP addresses).
    pub fn generate(common_name: &str, names: &[&str]) -> Result<Self, PkiError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{common_name}-ca"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving_params =
            CertificateParams::new(names.iter().map(|&n| n.to_owned()).collect::<Vec<_>>())?;
        serving_params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        serving_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;
        Ok(Self {
            ca_cert: ca_cert.pem(),
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
        })
    }
}

/// 128 random bits as hex: the apiserver listens on loopback, which every local user can reach.
fn random_token() -> Result<String, PkiError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(PkiError::Random)?;
    Ok(bytes
        .iter()
        .fold(String::with_capacity(32), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        }))
}

/// Why credentials could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a key or certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot read the system random source: {0}")]
    Random(getrandom::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_distinct_pem_material() {
        let first = ClusterPki::generate().expect("pki");
        let second = ClusterPki::generate().expect("pki");
        assert!(first.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.serving_key.contains("PRIVATE KEY"));
        assert_eq!(first.admin_token.len(), 32);
        assert_ne!(first.admin_token, second.admin_token);
        assert_ne!(first.service_account_key, second.service_account_key);
    }
}
