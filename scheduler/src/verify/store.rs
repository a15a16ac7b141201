//! Reading a BackupStorageLocation's objects with aws-sdk-s3, configured from the BSL exactly as
//! velero-plugin-for-aws reads it (`region`, `s3Url`, `s3ForcePathStyle`, `profile`, credentials
//! in AWS shared-credentials-file format, and the CA bundle of `spec.objectStorage.caCert` or
//! `caCertRef`). The client is built explicitly: the SDK's default chain would probe the EC2
//! metadata service.
//!
//! TLS certificates are always checked. A BSL with `config.insecureSkipTLSVerify: "true"` is
//! refused with a message pointing at `caCertRef`: verification reads the backups a failover will
//! trust, so it will not read them from a server it cannot authenticate.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::report::Reason;
use crate::velero::StorageLocation;

/// The region used when a BSL with a custom `s3Url` names none (what S3-compatible stores accept).
const DEFAULT_REGION: &str = "us-east-1";

/// A failure to reach or read object storage, classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub reason: Reason,
    pub message: String,
}

/// Access keys from a credentials file profile.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKeys")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Reads `profile` from an AWS shared credentials file (`[default]\naws_access_key_id=…`).
/// `origin` names the Secret key for messages.
pub fn parse_credentials(
    text: &str,
    profile: &str,
    origin: &str,
) -> Result<AccessKeys, StoreError> {
    let missing = |message: String| StoreError {
        reason: Reason::CredentialsMissing,
        message,
    };
    let ini = ini::Ini::load_from_str(text)
        .map_err(|e| missing(format!("{origin} is not an AWS credentials file: {e}")))?;
    let section = ini.section(Some(profile)).ok_or_else(|| {
        missing(format!(
            "{origin} has no [{profile}] profile (the BackupStorageLocation's config.profile, \"default\" when unset)"
        ))
    })?;
    let field = |key: &str| {
        section
            .get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let access_key_id = field("aws_access_key_id").ok_or_else(|| {
        missing(format!(
            "{origin} profile [{profile}] has no aws_access_key_id"
        ))
    })?;
    let secret_access_key = field("aws_secret_access_key").ok_or_else(|| {
        missing(format!(
            "{origin} profile [{profile}] has no aws_secret_access_key"
        ))
    })?;
    Ok(AccessKeys {
        access_key_id,
        secret_access_key,
        session_token: field("aws_session_token"),
    })
}

/// One BSL's bucket.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    client: Client,
    bucket: String,
    endpoint: String,
}

/// A CA bundle (PEM) that object storage's certificate may chain to, and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct CaBundle<'a> {
    pub pem: &'a [u8],
    /// Names the field or Secret key, for messages.
    pub origin: &'a str,
}

impl CaBundle<'_> {
    /// Checks that the bundle is PEM and each of its certificates can be a trust anchor; a bundle
    /// without any is refused too. Errors name the bundle's origin.
    fn check(&self) -> Result<(), StoreError> {
        let invalid = |detail: String| StoreError {
            reason: Reason::StorageLocationInvalid,
            message: format!(
                "{} {detail}: it must hold the PEM certificates (-----BEGIN CERTIFICATE-----) of the CA that signed object storage's TLS certificate",
                self.origin
            ),
        };
        let certificates = CertificateDer::pem_slice_iter(self.pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("is not PEM ({e})")))?;
        if certificates.is_empty() {
            return Err(invalid("holds no certificate".to_owned()));
        }
        for (index, certificate) in certificates.into_iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(certificate)
                .map_err(|e| {
                    invalid(format!(
                        "certificate {} cannot be a trust anchor ({e})",
                        index + 1
                    ))
                })?;
        }
        Ok(())
    }

    /// An HTTPS client trusting the system's roots and this bundle.
    fn http_client(&self) -> Result<aws_sdk_s3::config::SharedHttpClient, StoreError> {
        // The client parses the bundle the same way when it connects, and panics where `check`
        // fails: it runs first.
        self.check()?;
        let trust = TrustStore::default().with_pem_certificate(self.pem);
        let context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| StoreError {
                reason: Reason::StorageLocationInvalid,
                message: format!("{}: {e}", self.origin),
            })?;
        Ok(aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https())
    }
}

impl ObjectStore {
    /// A client for `location` with `keys`, trusting `ca` besides the system's roots.
    pub fn new(
        location: &StorageLocation,
        keys: &AccessKeys,
        ca: Option<CaBundle<'_>>,
    ) -> Result<Self, StoreError> {
        if !matches!(
            location.provider.as_str(),
            "aws" | "velero.io/aws" | "" | "s3"
        ) {
            return Err(StoreError {
                reason: Reason::StorageLocationInvalid,
                message: format!(
                    "BackupStorageLocation {} has provider {:?}; verification reads S3-compatible storage (provider aws)",
                    location.name, location.provider
                ),
            });
        }
        let config = &location.config;
        if config
            .get("insecureSkipTLSVerify")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Err(StoreError {
                reason: Reason::StorageLocationInvalid,
                message: format!(
                    "BackupStorageLocation {} sets config.insecureSkipTLSVerify: \"true\"; verification does not read backups from a server whose certificate it cannot check. Put the CA that signed object storage's certificate in a Secret and name it in spec.objectStorage.caCertRef (Velero >= 1.17) or spec.objectStorage.caCert, then remove insecureSkipTLSVerify",
                    location.name
                ),
            });
        }
        let region = config
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let credentials = Credentials::new(
            &keys.access_key_id,
            &keys.secret_access_key,
            keys.session_token.clone(),
            None,
            "backup-storage-location",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials)
            .force_path_style(
                config
                    .get("s3ForcePathStyle")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            )
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_mins(1))
                    .build(),
            );
        if let Some(ca) = ca {
            builder = builder.http_client(ca.http_client()?);
        }
        let endpoint = match config.get("s3Url").filter(|u| !u.is_empty()) {
            Some(url) => {
                if url.starts_with("http://") {
                    tracing::warn!(
                        location = %location.name,
                        s3_url = %url,
                        "the BackupStorageLocation reaches object storage over plain HTTP: backups and request signatures cross the network unencrypted; use https:// (with spec.objectStorage.caCertRef for a private CA)"
                    );
                }
                builder = builder.endpoint_url(url);
                url.clone()
            }
            None => format!("https://s3.{region}.amazonaws.com"),
        };
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: location.bucket.clone(),
            endpoint,
        })
    }

    /// Checks that the bucket exists and the credentials are accepted.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.classify(&e, None))
    }

    /// The size of `key`, or `None` if there is no such object.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.content_length()
                    .and_then(|l| u64::try_from(l).ok())
                    .unwrap_or_default(),
            )),
            Err(error) => {
                let error = self.classify(&error, Some(key));
                if error.reason == Reason::ObjectMissing {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Streams `key`.
    pub async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|output| output.body)
            .map_err(|e| self.classify(&e, Some(key)))
    }

    /// Reads `key` whole (only for the small files: resource list, metadata).
    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let body = self.get(key).await?;
        body.collect()
            .await
            .map(|data| data.into_bytes().to_vec())
            .map_err(|e| StoreError {
                reason: Reason::ObjectStoreUnreachable,
                message: format!(
                    "reading s3://{}/{key} from {} failed: {e}",
                    self.bucket, self.endpoint
                ),
            })
    }

    /// Writes `bytes` to `key` as JSON (only the small records ReplicaDR keeps beside Velero's).
    pub async fn put_json(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let error = self.classify(&e, Some(key));
                StoreError {
                    message: format!("writing failed: {}", error.message),
                    ..error
                }
            })
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn classify<E, R>(&self, error: &SdkError<E, R>, key: Option<&str>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + HasStatus,
    {
        let target = match key {
            Some(key) => format!("s3://{}/{key}", self.bucket),
            None => format!("bucket {}", self.bucket),
        };
        let endpoint = &self.endpoint;
        let (reason, detail) = match error {
            SdkError::ServiceError(service) => {
                let status = service.raw().status_code();
                let code = service.err().code().unwrap_or_default();
                let reason = match (code, status) {
                    ("NoSuchBucket", _) => Reason::BucketNotFound,
                    // HEAD responses have no body: the SDK calls every 404 "NotFound".
                    (_, 404) if key.is_none() => Reason::BucketNotFound,
                    ("NoSuchKey" | "NotFound", _) => Reason::ObjectMissing,
                    (
                        "InvalidAccessKeyId"
                        | "SignatureDoesNotMatch"
                        | "AccessDenied"
                        | "InvalidToken"
                        | "ExpiredToken"
                        | "InvalidSecurity",
                        _,
                    )
                    | (_, 401 | 403) => Reason::CredentialsRejected,
                    (_, 404) => Reason::ObjectMissing,
                    (_, status) if status >= 500 => Reason::ObjectStoreUnreachable,
                    _ => Reason::ObjectStoreUnreachable,
                };
                let detail = if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!(
                        "{code} (HTTP {status}): {}",
                        service.err().message().unwrap_or_default()
                    )
                };
                (reason, detail)
            }
            other => {
                let detail = error_chain(other);
                // rustls's words for a certificate it refused during the handshake.
                if detail.contains("invalid peer certificate") {
                    (Reason::ObjectStoreUntrusted, detail)
                } else {
                    (Reason::ObjectStoreUnreachable, detail)
                }
            }
        };
        let message = match reason {
            Reason::BucketNotFound => format!(
                "bucket {} does not exist at {endpoint} ({detail})",
                self.bucket
            ),
            Reason::CredentialsRejected => {
                format!("{endpoint} rejected the credentials for {target}: {detail}")
            }
            Reason::ObjectMissing => format!("{target} does not exist"),
            Reason::ObjectStoreUntrusted => format!(
                "cannot read {target}: the TLS certificate of {endpoint} is not trusted ({detail}); if a private CA signed it, put that CA's PEM in a Secret in Velero's namespace and name it in the BackupStorageLocation's spec.objectStorage.caCertRef (or inline in caCert)"
            ),
            _ => format!("cannot read {target} from {endpoint}: {detail}"),
        };
        StoreError { reason, message }
    }
}

/// The HTTP status of a raw response, for classification.
pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_profile_velero_uses() {
        let text = "[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s3cr3t\n\n[other]\naws_access_key_id=AKIA2\naws_secret_access_key=x\naws_session_token=tok\n";
        let keys = parse_credentials(text, "default", "secret velero/cloud-credentials key cloud")
            .expect("default");
        assert_eq!(keys.access_key_id, "AKIA1");
        assert_eq!(keys.secret_access_key, "s3cr3t");
        assert_eq!(keys.session_token, None);
        let other = parse_credentials(text, "other", "x").expect("other");
        assert_eq!(other.session_token.as_deref(), Some("tok"));
        assert!(
            !format!("{other:?}").contains("tok"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn missing_profile_or_key_says_what_is_missing() {
        let error = parse_credentials(
            "[default]\naws_access_key_id=a\n",
            "default",
            "secret velero/s3 key cloud",
        )
        .expect_err("no secret");
        assert_eq!(error.reason, Reason::CredentialsMissing);
        assert!(
            error.message.contains(
                "secret velero/s3 key cloud profile [default] has no aws_secret_access_key"
            ),
            "{}",
            error.message
        );
        let error = parse_credentials("[default]\n", "prod", "s").expect_err("no profile");
        assert!(
            error.message.contains("no [prod] profile"),
            "{}",
            error.message
        );
    }
}
