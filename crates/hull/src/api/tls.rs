//! The API's TLS: a node CA (`etc/hull/api/ca.{crt,key}`, made on first use), a server
//! certificate it signs, and client certificates it signs for `hull api trust add`. A client
//! is let in when its certificate chains to the node CA (else the handshake fails) and its
//! SHA-256 fingerprint is in `etc/hull/api/trust.json` (else every request gets 403), so
//! `trust remove` takes a certificate back at once, without a CRL. The trust file is read at
//! each connection.

use crate::Failure;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One trusted client certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trusted {
    pub name: String,
    /// `sha256:` and the certificate's DER digest in hex.
    pub fingerprint: String,
    pub added: String,
}

pub struct Pki {
    dir: PathBuf,
}

fn fail(what: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(1, format!("{what}: {e}"))
}

/// The SHA-256 fingerprint of a certificate's DER, as trust.json keeps it.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A validity from the start of this year for `years` years.
fn validity(params: &mut CertificateParams, years: i32) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

fn pem_der(text: &str, what: &str) -> Result<Vec<u8>, Failure> {
    pem::parse(text).map(|p| p.into_contents()).map_err(|e| fail(what, e))
}

/// A name a certificate and the trust list may carry: letters, digits, `.`, `-`, `_`, `@`.
pub fn check_name(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(Failure::new(2, format!("{name:?}: a client's name is 1 to 64 letters, digits, '.', '-', '_' or '@'")))
    }
}

impl Pki {
    pub fn new(node: &hull_storage::Node) -> Pki {
        Pki { dir: node.root().join("etc/hull/api") }
    }

    fn write_private(&self, name: &str, text: &str) -> Result<(), Failure> {
        write_mode(&self.dir.join(name), text, 0o600)
    }

    fn read(&self, name: &str) -> Result<String, Failure> {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| fail(&path.display().to_string(), e))
    }

    /// The node CA's certificate (PEM), made on first use.
    pub fn ca_pem(&self) -> Result<String, Failure> {
        if !self.dir.join("ca.crt").exists() {
            std::fs::create_dir_all(&self.dir).map_err(|e| fail(&self.dir.display().to_string(), e))?;
            std::fs::set_permissions(&self.dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| fail(&self.dir.display().to_string(), e))?;
            // One maker at a time (a server starting while `trust add` runs): two would
            // each write a key, and the certificate kept could be the other's.
            let _made = hull_storage::lock::lock(&self.dir.join(".ca.lock")).map_err(|e| fail("lock the CA", e))?;
            if self.dir.join("ca.crt").exists() {
                return self.read("ca.crt");
            }
            let key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "hull node CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            validity(&mut params, 20);
            let cert = params.self_signed(&key).map_err(|e| fail("CA certificate", e))?;
            self.write_private("ca.key", &key.serialize_pem())?;
            let path = self.dir.join("ca.crt");
            hull_exec::write_atomic(&path, cert.pem().as_bytes()).map_err(|e| fail(&path.display().to_string(), e))?;
        }
        self.read("ca.crt")
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Failure> {
        let ca = self.ca_pem()?;
        let key = KeyPair::from_pem(&self.read("ca.key")?).map_err(|e| fail("CA key", e))?;
        Issuer::from_ca_cert_pem(&ca, key).map_err(|e| fail("CA certificate", e))
    }

    /// A client certificate for `name`, signed by the node CA: made with a new key here (the
    /// key is returned), or from a CSR (whose key never leaves the client). Whatever the CSR
    /// asks for, the certificate is a client's: no CA bit, client auth only, CN = name.
    pub fn issue_client(&self, name: &str, csr_pem: Option<&str>) -> Result<(String, Option<String>), Failure> {
        check_name(name)?;
        let issuer = self.issuer()?;
        let client_params = |mut params: CertificateParams| {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, name);
            params.distinguished_name = dn;
            params.subject_alt_names.clear();
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.custom_extensions.clear();
            params.name_constraints = None;
            params.use_authority_key_identifier_extension = true;
            validity(&mut params, 5);
            params
        };
        match csr_pem {
            Some(csr) => {
                let mut req = CertificateSigningRequestParams::from_pem(csr).map_err(|e| fail("CSR", e))?;
                req.params = client_params(req.params);
                let cert = req.signed_by(&issuer).map_err(|e| fail("client certificate", e))?;
                Ok((cert.pem(), None))
            }
            None => {
                let key = KeyPair::generate().map_err(|e| fail("client key", e))?;
                let cert = client_params(CertificateParams::default())
                    .signed_by(&key, &issuer)
                    .map_err(|e| fail("client certificate", e))?;
                Ok((cert.pem(), Some(key.serialize_pem())))
            }
        }
    }

    /// The server's certificate for `names` (DNS names or addresses), made now and kept for
    /// the server's life.
    fn server_cert(&self, names: &[String]) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Failure> {
        let issuer = self.issuer()?;
        let key = KeyPair::generate().map_err(|e| fail("server key", e))?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| fail("server name", e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("hull"));
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 2);
        let cert = params.signed_by(&key, &issuer).map_err(|e| fail("server certificate", e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key_der))
    }

    /// rustls's server config: client certificates required, chained to the node CA.
    pub fn server_config(&self, names: &[String]) -> Result<Arc<rustls::ServerConfig>, Failure> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(pem_der(&self.ca_pem()?, "CA certificate")?)).map_err(|e| fail("CA", e))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| fail("client verifier", e))?;
        let (cert, key) = self.server_cert(names)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert], key)
            .map_err(|e| fail("server certificate", e))?;
        Ok(Arc::new(config))
    }

    fn trust_path(&self) -> PathBuf {
        self.dir.join("trust.json")
    }

    pub fn trusted(&self) -> Result<Vec<Trusted>, Failure> {
        match std::fs::read(self.trust_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| fail(&self.trust_path().display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(fail(&self.trust_path().display().to_string(), e)),
        }
    }

    fn save(&self, list: &[Trusted]) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(list).unwrap_or_default();
        std::fs::create_dir_all(&self.dir).map_err(|e| fail(&self.dir.display().to_string(), e))?;
        self.write_private("trust.json", &text)
    }

    /// Trusts a certificate (PEM) under `name`; a name already taken is refused.
    pub fn trust(&self, name: &str, cert_pem: &str) -> Result<Trusted, Failure> {
        check_name(name)?;
        let fp = fingerprint(&pem_der(cert_pem, "certificate")?);
        let mut list = self.trusted()?;
        if list.iter().any(|t| t.name == name) {
            return Err(Failure::new(1, format!("a client named {name} is already trusted")));
        }
        let t = Trusted { name: name.into(), fingerprint: fp, added: hull_zone::events::now_rfc3339() };
        list.push(t.clone());
        self.save(&list)?;
        Ok(t)
    }

    /// Takes back the certificate named `what` (its name or fingerprint).
    pub fn untrust(&self, what: &str) -> Result<Trusted, Failure> {
        let mut list = self.trusted()?;
        let i = list
            .iter()
            .position(|t| t.name == what || t.fingerprint == what)
            .ok_or_else(|| Failure::new(1, format!("no trusted client {what}")))?;
        let t = list.remove(i);
        self.save(&list)?;
        Ok(t)
    }

    /// The trusted entry for a presented certificate, if any.
    pub fn lookup(&self, der: &[u8]) -> Option<Trusted> {
        let fp = fingerprint(der);
        self.trusted().ok()?.into_iter().find(|t| t.fingerprint == fp)
    }
}

/// Writes `text` to `path` atomically with `mode` from the start (a key is never readable
/// by others), then sets `mode` exactly (the umask may have taken bits from it).
fn write_mode(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    let what = || path.display().to_string();
    hull_exec::write_atomic_mode(path, text.as_bytes(), mode).map_err(|e| fail(&what(), e))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(|e| fail(&what(), e))
}

/// Writes the files a client needs into `dir`: NAME.crt, NAME.key (when made here), ca.crt.
pub fn write_client(dir: &Path, name: &str, cert: &str, key: Option<&str>, ca: &str) -> Result<Vec<PathBuf>, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), e))?;
    let mut out = Vec::new();
    let mut put = |file: String, text: &str, mode: u32| -> Result<(), Failure> {
        let p = dir.join(file);
        write_mode(&p, text, mode)?;
        out.push(p);
        Ok(())
    };
    put(format!("{name}.crt"), cert, 0o644)?;
    if let Some(k) = key {
        put(format!("{name}.key"), k, 0o600)?;
    }
    put("ca.crt".into(), ca, 0o644)?;
    Ok(out)
}
