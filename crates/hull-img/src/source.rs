//! An IMGAPI-compatible image source over HTTP: `GET /images`, `GET /images/UUID` and
//! `GET /images/UUID/file`.

use crate::db::SourceTls;
use crate::{ImgError, Result};
use hull_spec::Manifest;
use std::io::Read;
use std::time::Duration;
use uuid::Uuid;

/// The most JSON a source may send for one listing.
const MAX_JSON: u64 = 64 << 20;

pub struct Client {
    agent: ureq::Agent,
    pub url: String,
}

/// Checks a source URL: http or https, a host, no query or fragment.
pub fn check_url(url: &str) -> Result<String> {
    let bad = |reason: &str| ImgError::BadSourceUrl { url: url.to_string(), reason: reason.to_string() };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if url.contains(['?', '#', ' ']) {
        return Err(bad("must not hold a query, fragment or space"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Reads a PEM file a source's TLS names.
fn pem(url: &str, what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| ImgError::Source { url: url.to_string(), reason: format!("its {what} {}: {e}", path.display()) })
}

/// ureq's TLS for a source with a client certificate: that certificate, and only the
/// source's CA as a root.
fn tls_config(url: &str, tls: &SourceTls) -> Result<ureq::tls::TlsConfig> {
    let bad =
        |what: &str, e: ureq::Error| ImgError::Source { url: url.to_string(), reason: format!("its {what}: {e}") };
    let cert =
        ureq::tls::Certificate::from_pem(&pem(url, "certificate", &tls.cert)?).map_err(|e| bad("certificate", e))?;
    let key = ureq::tls::PrivateKey::from_pem(&pem(url, "key", &tls.key)?).map_err(|e| bad("key", e))?;
    let ca = ureq::tls::Certificate::from_pem(&pem(url, "CA certificate", &tls.ca)?)
        .map_err(|e| bad("CA certificate", e))?;
    Ok(ureq::tls::TlsConfig::builder()
        .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[cert], key)))
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![ca])))
        .build())
}

/// An HTTP agent for `url` (another node's API, an image server), showing `tls`'s
/// certificate when it is given; statuses are answers, not errors. `patient` waits as long
/// as an answer takes (a migration's stream), else 30 s for an answer and 60 s between reads.
pub fn agent(url: &str, tls: Option<&SourceTls>, patient: bool) -> Result<ureq::Agent> {
    let mut config = ureq::Agent::config_builder();
    if let Some(t) = tls {
        config = config.tls_config(tls_config(url, t)?);
    }
    let (body, answer) = if patient { (None, None) } else { (Some(60), Some(30)) };
    Ok(config
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_body(body.map(Duration::from_secs))
        .timeout_recv_response(answer.map(Duration::from_secs))
        .http_status_as_error(false)
        .build()
        .new_agent())
}

impl Client {
    /// A client of `url`, showing `tls`'s certificate when it is given.
    pub fn new(url: &str, tls: Option<&SourceTls>) -> Result<Client> {
        Ok(Client { agent: agent(url, tls, false)?, url: url.trim_end_matches('/').to_string() })
    }

    fn err(&self, reason: impl Into<String>) -> ImgError {
        ImgError::Source { url: self.url.clone(), reason: reason.into() }
    }

    fn get(&self, path: &str) -> Result<Option<ureq::Body>> {
        let url = format!("{}{path}", self.url);
        let resp = self.agent.get(&url).call().map_err(|e| self.err(format!("GET {path}: {e}")))?;
        let status = resp.status().as_u16();
        match status {
            200 => Ok(Some(resp.into_body())),
            404 => Ok(None),
            s => Err(self.err(format!("GET {path}: HTTP status {s}"))),
        }
    }

    fn get_json(&self, path: &str) -> Result<Option<serde_json::Value>> {
        let Some(mut body) = self.get(path)? else {
            return Ok(None);
        };
        let text =
            body.with_config().limit(MAX_JSON).read_to_string().map_err(|e| self.err(format!("GET {path}: {e}")))?;
        serde_json::from_str(&text).map(Some).map_err(|e| self.err(format!("GET {path} answered invalid JSON: {e}")))
    }

    /// Every valid manifest the source lists; invalid ones are skipped with a warning.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let v =
            self.get_json("/images")?.ok_or_else(|| self.err("GET /images: not found (is this an IMGAPI server?)"))?;
        let serde_json::Value::Array(items) = v else {
            return Err(self.err("GET /images did not answer a JSON array"));
        };
        let mut out = Vec::new();
        for item in items {
            let id = item.get("uuid").and_then(|u| u.as_str()).unwrap_or("?").to_string();
            match Manifest::from_value(item) {
                Ok(m) => out.push(m),
                Err(e) => {
                    tracing::warn!(source = %self.url, image = %id, "skipping an invalid manifest: {e}")
                }
            }
        }
        Ok(out)
    }

    pub fn manifest(&self, uuid: &Uuid) -> Result<Option<Manifest>> {
        let path = format!("/images/{uuid}");
        let Some(v) = self.get_json(&path)? else {
            return Ok(None);
        };
        let m = Manifest::from_value(v).map_err(|e| self.err(format!("GET {path}: {e}")))?;
        if m.uuid != *uuid {
            return Err(self.err(format!("GET {path} answered the manifest of {}", m.uuid)));
        }
        Ok(Some(m))
    }

    /// The image file's bytes, and the length the server announced.
    pub fn file(&self, uuid: &Uuid) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
        let path = format!("/images/{uuid}/file");
        let body = self.get(&path)?.ok_or_else(|| self.err(format!("GET {path}: not found")))?;
        let len = body.content_length();
        let reader = body.into_with_config().limit(hull_spec::manifest::MAX_FILE_SIZE + 1).reader();
        Ok((Box::new(reader), len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(check_url("http://127.0.0.1:8080/").ok().as_deref(), Some("http://127.0.0.1:8080"));
        assert!(check_url("https://images.smartos.org").is_ok());
        for bad in ["ftp://x", "http://", "images.smartos.org", "http://x/?a=b"] {
            assert!(check_url(bad).is_err(), "{bad} accepted");
        }
    }
}
