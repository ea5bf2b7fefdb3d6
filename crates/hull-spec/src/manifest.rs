//! IMGAPI image manifests, version 2.
//!
//! The fields are those IMGAPI documents ("Image manifests" in sdc-imgapi's docs/index.md).
//! Unknown fields are refused, so a typo never silently drops a requirement. [`Manifest::parse`]
//! checks the JSON shape and then every value, and reports all problems at once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// Largest image file IMGAPI accepts.
pub const MAX_FILE_SIZE: u64 = 20 << 30;

/// IMGAPI's booleans may come as strings (`"true"`, `"false"`), as imgmanifest's
/// `boolFromString` takes them.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(other) => Err(serde::de::Error::custom(format!("expected a boolean, got {other}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub v: u32,
    pub uuid: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Uuid>,
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homepage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eula: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub icon: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ImageState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ImageErrorInfo>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// Whether IMGAPI has activated the image (every served manifest says).
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub activated: Option<bool>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub public: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    #[serde(rename = "type")]
    pub image_type: ImageType,
    pub os: Os,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Uuid>,
    #[serde(default)]
    pub files: Vec<ImageFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acl: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<Requirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<ImageUser>>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub generate_passwords: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_directories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_type: Option<String>,
    /// zvol images: the disk's size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// Deprecated in IMGAPI, still served for old images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Active,
    Unactivated,
    Disabled,
    Creating,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageErrorInfo {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageType {
    ZoneDataset,
    LxDataset,
    Zvol,
    Docker,
    Lxd,
    Other,
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::ZoneDataset => "zone-dataset",
            ImageType::LxDataset => "lx-dataset",
            ImageType::Zvol => "zvol",
            ImageType::Docker => "docker",
            ImageType::Lxd => "lxd",
            ImageType::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Os {
    Smartos,
    Linux,
    Windows,
    Bsd,
    Illumos,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }

    /// The usual file name suffix of an image file with this compression.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".tar.gz",
            Compression::Bzip2 => ".tar.bz2",
            Compression::Xz => ".tar.xz",
            Compression::Zstd => ".tar.zst",
            Compression::None => ".tar",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "gzip" => Compression::Gzip,
            "bzip2" => Compression::Bzip2,
            "xz" => Compression::Xz,
            "zstd" => Compression::Zstd,
            "none" => Compression::None,
            other => {
                return Err(format!("unknown compression {other:?} (gzip, zstd or none)"));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageFile {
    pub sha1: String,
    pub size: u64,
    pub compression: Compression,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, rename = "uncompressedDigest", skip_serializing_if = "Option::is_none")]
    pub uncompressed_digest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<NetworkRequirement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool", skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_platform: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_platform: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootrom: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkRequirement {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageUser {
    pub name: String,
}

/// A v1 (DSAPI) manifest made v2, as imgmanifest's `upgradeTo2` does: a manifest with no
/// `v` and a `creator_uuid` is v1; its owner is its creator, `restricted_to_uuid` becomes
/// a private ACL, `created_at` the publication time (seconds added where missing), a
/// file's compression is read from its name, and the fields v2 dropped go. A v2 manifest
/// is left as it is.
pub fn upgrade(value: Value) -> Result<Value, ManifestError> {
    let Value::Object(mut m) = value else { return Ok(value) };
    match m.get("v") {
        Some(_) => return Ok(Value::Object(m)),
        None if !m.contains_key("creator_uuid") => {
            return Err(ManifestError::Invalid(vec!["manifest has no \"v\" field".into()]));
        }
        None => {}
    }
    if let Some(c) = m.remove("creator_uuid") {
        if m.contains_key("owner") {
            return Err(ManifestError::Invalid(vec!["a v1 manifest with both owner and creator_uuid".into()]));
        }
        m.insert("owner".into(), c);
    }
    for k in ["vendor_uuid", "creator_name", "cloud_name", "creator_admin", "owner_uuid"] {
        m.remove(k);
    }
    match m.remove("restricted_to_uuid") {
        Some(r) => {
            m.insert("public".into(), Value::Bool(false));
            m.insert("acl".into(), Value::Array(vec![r]));
        }
        None => {
            m.insert("public".into(), Value::Bool(true));
        }
    }
    let disabled = m.get("disabled").map(|d| !matches!(d, Value::Bool(false) | Value::Null)).unwrap_or(false);
    m.insert("disabled".into(), Value::Bool(disabled));
    m.insert("state".into(), Value::from(if disabled { "disabled" } else { "active" }));
    if !m.contains_key("published_at")
        && let Some(c) = m.get("created_at").cloned()
    {
        m.insert("published_at".into(), c);
    }
    // YYYY-MM-DDTHH:MMZ -> YYYY-MM-DDTHH:MM:SSZ
    if let Some(Value::String(p)) = m.get_mut("published_at")
        && p.len() == 17
        && p.ends_with('Z')
        && p.as_bytes().get(13) == Some(&b':')
    {
        p.truncate(16);
        p.push_str(":00Z");
    }
    if let Some(Value::Array(files)) = m.get_mut("files") {
        for f in files.iter_mut().filter_map(Value::as_object_mut) {
            if !f.contains_key("compression") {
                let name = f.get("path").or(f.get("url")).and_then(Value::as_str).unwrap_or("");
                let c = if name.ends_with(".gz") {
                    "gzip"
                } else if name.ends_with(".bz2") {
                    "bzip2"
                } else {
                    "none"
                };
                f.insert("compression".into(), Value::from(c));
            }
            f.remove("path");
            f.remove("url");
        }
    }
    if let Some(size) = m.get("image_size").and_then(|v| v.as_str().and_then(|s| s.parse::<u64>().ok())) {
        m.insert("image_size".into(), Value::from(size));
    }
    for k in ["platform_type", "created_at", "updated_at", "_url"] {
        m.remove(k);
    }
    m.insert("v".into(), Value::from(2));
    Ok(Value::Object(m))
}

/// imgmanifest's validPlatformVersion: `YYYYMMDDTHHMMSSZ`, from 2012.
fn platform_version_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        b.get(r.clone()).filter(|x| x.iter().all(u8::is_ascii_digit)).and_then(|_| s[r].parse::<u32>().ok())
    };
    b.len() == 16
        && num(0..4).is_some_and(|y| y >= 2012)
        && num(4..6).is_some_and(|m| (1..=12).contains(&m))
        && num(6..8).is_some_and(|d| (1..=31).contains(&d))
        && b[8] == b'T'
        && num(9..11).is_some_and(|h| h <= 23)
        && num(11..13).is_some_and(|m| m <= 59)
        && num(13..15).is_some_and(|s| s <= 59)
        && b[15] == b'Z'
}

/// imgmanifest's PUBLISHED_AT_RE: `2014-03-05T21:52:53Z`, milliseconds optional.
fn published_at_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    base && (b.len() == 20 && b[19] == b'Z' || b.len() == 24 && b[19] == b'.' && digits(20..23) && b[23] == b'Z')
}

/// A manifest that could not be accepted: the JSON shape, or a list of bad values.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error("invalid manifest: {0}")]
    Syntax(String),
    #[error("invalid manifest: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Manifest {
    /// Parses and validates a manifest (a v1 one, from DSAPI, is upgraded first).
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        Manifest::from_value(value)
    }

    /// Parses an already decoded JSON value (an element of IMGAPI's `GET /images`).
    pub fn from_value(value: Value) -> Result<Manifest, ManifestError> {
        let value = upgrade(value)?;
        let m: Manifest = serde_path_to_error::deserialize(value).map_err(syntax)?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every value; reports all problems together.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let mut bad = Vec::new();
        if self.v != 2 {
            bad.push(format!("v must be 2 (got {})", self.v));
        }
        if self.uuid.is_nil() {
            bad.push("uuid must not be the nil uuid".to_string());
        }
        // imgmanifest's NAME_RE and VERSION_RE, and their lengths.
        if self.name.is_empty() || self.name.len() > 1024 {
            bad.push("name must be 1 to 1024 characters".to_string());
        } else if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "._/ -".contains(c)) {
            bad.push(format!("name {:?} may only hold letters, digits, ' ', '.', '-', '_' and '/'", self.name));
        }
        if self.version.is_empty() || self.version.len() > 512 {
            bad.push("version must be 1 to 512 characters".to_string());
        } else if !self.version.chars().all(|c| c.is_ascii_alphanumeric() || "._/+-".contains(c)) {
            bad.push(format!("version {:?} may only hold letters, digits and '._/+-'", self.version));
        }
        if let Some(d) = &self.description
            && d.len() > 10 * 1024
        {
            bad.push("description is over 10240 characters".to_string());
        }
        for (what, u) in [("homepage", &self.homepage), ("eula", &self.eula)] {
            if let Some(u) = u
                && (!(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 1024)
            {
                bad.push(format!("{what} must be an http or https URL of at most 1024 characters"));
            }
        }
        if let Some(p) = &self.published_at
            && !published_at_ok(p)
        {
            bad.push(format!("published_at {p:?} is not YYYY-MM-DDTHH:MM:SS(.mmm)Z"));
        }
        if self.activated == Some(true) && self.published_at.is_none() {
            bad.push("published_at must be present when activated is true".to_string());
        }
        if self.activated == Some(true) && self.files.is_empty() {
            bad.push("files must be present when activated is true".to_string());
        }
        if self.image_type != ImageType::Zvol {
            for (what, v) in
                [("nic_driver", &self.nic_driver), ("disk_driver", &self.disk_driver), ("cpu_type", &self.cpu_type)]
            {
                if v.as_deref().is_some_and(|v| !v.is_empty()) {
                    bad.push(format!("{what} is only for zvol images"));
                }
            }
        }
        for (what, list) in [("billing_tags", &self.billing_tags), ("channels", &self.channels)] {
            if list.as_ref().is_some_and(|l| l.iter().any(|t| t.len() > 128)) {
                bad.push(format!("{what}: a tag is over 128 characters"));
            }
        }
        if self.origin == Some(self.uuid) {
            bad.push("origin must not be the image itself".to_string());
        }
        let most = if self.image_type == ImageType::Lxd { 2 } else { 1 };
        if self.files.len() > most {
            bad.push(format!("files must hold at most {most} file(s) (got {})", self.files.len()));
        }
        for (i, f) in self.files.iter().enumerate() {
            if f.sha1.len() != 40 || !f.sha1.chars().all(|c| c.is_ascii_hexdigit()) {
                bad.push(format!("files[{i}].sha1 must be 40 hex digits (got {:?})", f.sha1));
            }
            if f.size > MAX_FILE_SIZE {
                bad.push(format!("files[{i}].size {} is over the 20 GiB limit", f.size));
            }
        }
        if let Some(r) = &self.requirements
            && let (Some(min), Some(max)) = (r.min_ram, r.max_ram)
            && min > max
        {
            bad.push(format!("requirements.min_ram {min} is above max_ram {max}"));
        }
        if let Some(r) = &self.requirements {
            if r.min_ram == Some(0) || r.max_ram == Some(0) {
                bad.push("requirements.min_ram and max_ram must be positive".to_string());
            }
            for (what, p) in [("min_platform", &r.min_platform), ("max_platform", &r.max_platform)] {
                if p.as_ref().is_some_and(BTreeMap::is_empty) {
                    bad.push(format!("requirements.{what} must not be empty"));
                }
                for (sdc, ver) in p.iter().flatten() {
                    if !platform_version_ok(ver) {
                        bad.push(format!(
                            "requirements.{what}.{sdc}: {ver:?} is not a platform version (YYYYMMDDTHHMMSSZ)"
                        ));
                    }
                }
            }
            // A bootrom is bhyve's: bios or uefi.
            if let Some(b) = &r.bootrom {
                match r.brand.as_deref() {
                    None => bad.push("requirements.bootrom needs requirements.brand \"bhyve\"".to_string()),
                    Some("bhyve") if matches!(b.as_str(), "bios" | "uefi") => {}
                    Some("bhyve") => bad.push(format!("requirements.bootrom {b:?} must be bios or uefi")),
                    Some(other) => {
                        bad.push(format!("requirements.bootrom is not for the {other:?} brand (only bhyve)"))
                    }
                }
            }
        }
        if bad.is_empty() { Ok(()) } else { Err(ManifestError::Invalid(bad)) }
    }

    /// The one image file, which installing requires.
    pub fn file(&self) -> Option<&ImageFile> {
        self.files.first()
    }

    pub fn to_json_pretty(&self) -> String {
        // Serialising our own types to a String cannot fail: no maps with non-string keys.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Names the field at fault: `uuid: UUID parsing failed ...`.
fn syntax<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> ManifestError {
    let path = e.path().to_string();
    if path == "." {
        ManifestError::Syntax(e.inner().to_string())
    } else {
        ManifestError::Syntax(format!("{path}: {}", e.inner()))
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}@{})", self.uuid, self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An image manifest as images.smartos.org serves it (GET /images/<uuid>), trimmed.
    const SMARTOS_BASE64: &str = r#"{
      "v": 2,
      "uuid": "c02a2044-c1bd-11e4-bd8c-dfc1db8b0182",
      "owner": "9dce1460-0c4c-4417-ab8b-25ca478c5a78",
      "name": "base64",
      "version": "14.4.1",
      "state": "active",
      "disabled": false,
      "public": true,
      "published_at": "2015-03-03T15:24:41Z",
      "type": "zone-dataset",
      "os": "smartos",
      "files": [
        {
          "sha1": "d8ea8b6d4bd3b2b64d3ac4d5d3c1e3c0ac8e0f51",
          "size": 109824747,
          "compression": "gzip"
        }
      ],
      "description": "A 64-bit SmartOS image with just essential packages installed.",
      "homepage": "https://docs.joyent.com/images/smartos/base",
      "urn": "sdc:sdc:base64:14.4.1",
      "requirements": {
        "min_platform": {"7.0": "20141030T081701Z"},
        "networks": [{"name": "net0", "description": "public"}]
      },
      "tags": {"role": "os", "group": "base-64-lts"}
    }"#;

    #[test]
    fn parses_a_served_manifest() {
        let m = Manifest::parse(SMARTOS_BASE64).expect("parse");
        assert_eq!(m.name, "base64");
        assert_eq!(m.image_type, ImageType::ZoneDataset);
        assert_eq!(m.file().map(|f| f.size), Some(109824747));
        let again = Manifest::parse(&m.to_json_pretty()).expect("round trip");
        assert_eq!(again, m);
    }

    #[test]
    fn unknown_field_is_named() {
        let text = SMARTOS_BASE64.replace("\"v\": 2,", "\"v\": 2, \"colour\": \"red\",");
        let err = Manifest::parse(&text).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let text = SMARTOS_BASE64.replace("\"os\": \"smartos\",", "");
        let err = Manifest::parse(&text).expect_err("missing");
        assert!(err.to_string().contains("missing field `os`"), "{err}");
    }

    #[test]
    fn bad_uuid_is_refused() {
        let text = SMARTOS_BASE64.replace("c02a2044-c1bd-11e4-bd8c-dfc1db8b0182", "not-a-uuid");
        let err = Manifest::parse(&text).expect_err("bad uuid");
        assert!(err.to_string().contains("manifest: uuid: "), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported() {
        let text = SMARTOS_BASE64
            .replace("\"v\": 2", "\"v\": 1")
            .replace("d8ea8b6d4bd3b2b64d3ac4d5d3c1e3c0ac8e0f51", "xyz")
            .replace("\"name\": \"base64\"", "\"name\": \"a*b\"");
        match Manifest::parse(&text) {
            Err(ManifestError::Invalid(list)) => {
                assert_eq!(list.len(), 3, "{list:?}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn imgapi_s_fields_and_names_as_imgmanifest_takes_them() {
        let text = SMARTOS_BASE64
            .replace("\"name\": \"base64\"", "\"name\": \"my images/base 64\"")
            .replace("\"v\": 2,", "\"v\": 2, \"activated\": \"true\", \"icon\": \"false\",");
        let m = Manifest::parse(&text).expect("spaces and slashes in a name, booleans as strings");
        assert_eq!((m.activated, m.icon), (Some(true), Some(false)));
        // A manifest without files is taken unless activated says it has some.
        let mut v: Value = serde_json::from_str(SMARTOS_BASE64).expect("json");
        v.as_object_mut().expect("o").remove("files");
        assert!(Manifest::from_value(v.clone()).is_ok());
        v["activated"] = Value::Bool(true);
        assert!(Manifest::from_value(v).is_err());
        let bad = |edit: &dyn Fn(&mut Value)| {
            let mut v: Value = serde_json::from_str(SMARTOS_BASE64).expect("json");
            edit(&mut v);
            Manifest::from_value(v).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(bad(&|v| v["published_at"] = "2014-03-05".into()).contains("published_at"));
        assert!(bad(&|v| v["version"] = "1.0~rc1".into()).contains("version"));
        assert!(bad(&|v| v["nic_driver"] = "virtio".into()).contains("only for zvol"));
        assert!(bad(&|v| v["requirements"]["bootrom"] = "uefi".into()).contains("requirements.brand"));
        assert!(
            bad(&|v| {
                v["requirements"]["brand"] = "bhyve".into();
                v["requirements"]["bootrom"] = "coreboot".into();
            })
            .contains("bios or uefi")
        );
        assert_eq!(
            bad(&|v| {
                v["requirements"]["brand"] = "bhyve".into();
                v["requirements"]["bootrom"] = "uefi".into();
            }),
            ""
        );
        assert!(bad(&|v| v["homepage"] = "ftp://x".into()).contains("homepage"));
    }

    #[test]
    fn a_v1_manifest_is_upgraded_as_imgadm_does() {
        let v1 = serde_json::json!({
            "uuid": "febaa412-6417-11e0-bc56-535d219f2590",
            "name": "smartos", "version": "1.3.12", "type": "zone-dataset", "os": "smartos",
            "description": "Base template", "urn": "sdc:sdc:smartos:1.3.12",
            "creator_uuid": "352971aa-31ba-496c-9ade-a379feaecd52",
            "vendor_uuid": "352971aa-31ba-496c-9ade-a379feaecd52", "creator_name": "sdc",
            "platform_type": "smartos", "cloud_name": "sdc",
            "created_at": "2011-04-11T08:45Z", "updated_at": "2011-04-11T08:45Z",
            "files": [{"path": "smartos-1.3.12.zfs.bz2", "sha1": "246b3d0b8e0b2ea6c63d8b1e4d1b1ef3d87b35e1",
                       "size": 47551523, "url": "https://datasets.joyent.com/datasets/febaa412/smartos-1.3.12.zfs.bz2"}]
        });
        let m = Manifest::from_value(v1).expect("v1 upgraded");
        assert_eq!(m.v, 2);
        assert_eq!(m.owner.map(|o| o.to_string()).as_deref(), Some("352971aa-31ba-496c-9ade-a379feaecd52"));
        assert_eq!((m.public, m.disabled, m.state), (Some(true), Some(false), Some(ImageState::Active)));
        assert_eq!(m.published_at.as_deref(), Some("2011-04-11T08:45:00Z"));
        assert_eq!(m.files[0].compression, Compression::Bzip2);
        assert!(Manifest::from_value(serde_json::json!({"uuid": "febaa412-6417-11e0-bc56-535d219f2590"})).is_err());
        let mut v: Value = serde_json::from_str(SMARTOS_BASE64).expect("json");
        v["requirements"]["min_platform"]["7.0"] = "2014-10-30".into();
        assert!(Manifest::from_value(v).expect_err("platform").to_string().contains("platform version"));
    }

    proptest::proptest! {
        // The parser takes untrusted input: random bytes and random edits of a good manifest
        // must give Ok or Err, never a panic.
        #[test]
        fn never_panics_on_bytes(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&String::from_utf8_lossy(&data));
        }

        #[test]
        fn never_panics_on_edits(pos in 0usize..1200, len in 0usize..40, junk in ".{0,20}") {
            let mut text = SMARTOS_BASE64.to_string();
            let start = pos.min(text.len());
            let end = (start + len).min(text.len());
            if text.is_char_boundary(start) && text.is_char_boundary(end) {
                text.replace_range(start..end, &junk);
            }
            let _ = Manifest::parse(&text);
        }
    }
}
