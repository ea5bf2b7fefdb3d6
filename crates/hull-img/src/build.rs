//! Making images on a machine with no image server: from a directory, from busybox-static
//! (a tiny image for tests) or from debootstrap (a real Debian image).
//!
//! The image file is a tar stream whose `root/` is the zone's root filesystem, so
//! `imgadm install -m <name>-<version>.json -f <name>-<version>.tar.gz` takes it as it is.

use crate::archive;
use crate::{ImgError, Result, progress};
use hull_exec::{CommandLine, tool};
use hull_spec::manifest::{ImageType, Os};
use hull_spec::{Compression, ImageFile, Manifest};
use sha1::Digest;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use uuid::Uuid;

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SUITE: &str = "bookworm";

/// Where the root filesystem comes from.
#[derive(Debug, Clone)]
pub enum RootSource {
    /// A directory that becomes `root/`.
    Dir(PathBuf),
    /// busybox-static and its applets, an inittab and the files a login needs.
    Busybox,
    /// `debootstrap --variant=minbase` with systemd as init.
    Debootstrap(Debian),
    /// A raw disk: a zvol image for KVM VMs.
    Disk(PathBuf),
    /// A KVM guest: this kernel and a busybox initramfs with the modules in `modules`, on a
    /// disk that boots from its MBR (see [`crate::guest`]).
    Guest { kernel: PathBuf, modules: PathBuf, debian: Option<Debian> },
}

/// A Debian root: which release, from where, and what more than the minimal base.
#[derive(Debug, Clone)]
pub struct Debian {
    pub suite: String,
    pub mirror: String,
    /// Packages to install besides the base (`cloud-init`, `openssh-server`...); debootstrap
    /// brings what they depend on.
    pub packages: Vec<String>,
    /// A directory of downloaded packages kept between builds (debootstrap's `--cache-dir`,
    /// and apt's archives while the packages install). Each package is checked against the
    /// mirror's signed index before it is used, as a download is, so a stale or damaged one
    /// is fetched again. Builds that share it take turns.
    pub cache: Option<PathBuf>,
}

impl Debian {
    pub fn new(suite: &str, mirror: &str) -> Debian {
        Debian { suite: suite.into(), mirror: mirror.into(), packages: Vec::new(), cache: None }
    }

    /// Refuses a suite, mirror or package name debootstrap should not be given.
    pub fn check(&self) -> Result<()> {
        let suite = &self.suite;
        if !suite.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || suite.is_empty() {
            return Err(ImgError::Build(format!("invalid suite {suite:?}")));
        }
        for p in &self.packages {
            if !package_name(p) {
                return Err(ImgError::Build(format!("invalid package name {p:?} (Debian's: a-z, 0-9, +, -, .)")));
            }
        }
        crate::source::check_url(&self.mirror).map_err(|e| ImgError::Build(e.to_string()))?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub source: RootSource,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub image_type: ImageType,
    pub os: Os,
    pub compression: Compression,
    pub out_dir: PathBuf,
    pub uuid: Option<Uuid>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Built {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    pub file_path: PathBuf,
}

/// Counts and hashes what passes through to the file.
struct HashingWriter<W: Write> {
    inner: W,
    sha1: sha1::Sha1,
    len: u64,
    pb: indicatif::ProgressBar,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha1.update(&buf[..n]);
        self.len += n as u64;
        self.pb.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn bld<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> ImgError + '_ {
    move |e| ImgError::Build(format!("{what}: {e}"))
}

/// Writes `root` as `root/` into an image file at `out`; returns its sha1 and size.
pub fn write_image_file(root: &Path, out: &Path, compression: Compression) -> Result<(String, u64)> {
    write_image_with(out, compression, |tar| write_tree(tar, root, None, false)).map_err(|e| match e {
        ImgError::Io { op: "archive", source, .. } => ImgError::io("archive", root, source),
        e => e,
    })
}

/// Writes an incremental image file: what differs in `root` from `origin` (see [`differs`]),
/// and a whiteout for each entry of `origin` that `root` no longer has. Both are zone roots;
/// they land under `root/`. `shared_inodes` says `root` is a clone of `origin` on a pool
/// whose clones keep their origin's inodes (btrfs, ZFS).
pub fn write_layer_file(
    root: &Path,
    origin: &Path,
    out: &Path,
    compression: Compression,
    shared_inodes: bool,
) -> Result<(String, u64)> {
    write_image_with(out, compression, |tar| write_tree(tar, root, Some(origin), shared_inodes))
}

/// Writes `root` under `root/` into `tar`, in name order (the same tree gives the same
/// bytes), whole or as a layer over `origin`. Nothing below `root` or `origin` is followed:
/// a link is archived as a link, and an origin's entry is entered only when it is a
/// directory itself.
pub fn write_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    origin: Option<&Path>,
    shared_inodes: bool,
) -> std::io::Result<()> {
    tar.append_dir("root", root)?;
    layer(tar, root, origin, Path::new("root"), shared_inodes)
}

/// Whether an entry differs from the origin's entry of the same name: by type, mode, owner,
/// link target, and for files size and mtime. Where clones keep their origin's inodes, a
/// file is also changed when its inode or ctime is not the origin's: a rewrite that kept size
/// and mtime (which a tenant can set) still shows, since no one can set a ctime.
fn differs(a: &std::fs::Metadata, b: &std::fs::Metadata, pa: &Path, pb: &Path, shared_inodes: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a.file_type() != b.file_type() || a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid() {
        return true;
    }
    if a.file_type().is_symlink() {
        return std::fs::read_link(pa).ok() != std::fs::read_link(pb).ok();
    }
    if a.is_dir() {
        return false;
    }
    if shared_inodes && (a.ino() != b.ino() || a.ctime() != b.ctime() || a.ctime_nsec() != b.ctime_nsec()) {
        return true;
    }
    a.len() != b.len() || a.mtime() != b.mtime() || a.mtime_nsec() != b.mtime_nsec()
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<std::ffi::OsString>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name());
    }
    names.sort();
    Ok(names)
}

fn layer<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    origin: Option<&Path>,
    name: &Path,
    shared: bool,
) -> std::io::Result<()> {
    let names = sorted_names(dir)?;
    for n in &names {
        let (p, arc) = (dir.join(n), name.join(n));
        let o = origin.map(|o| o.join(n));
        let m = std::fs::symlink_metadata(&p)?;
        let om = o.as_ref().and_then(|o| std::fs::symlink_metadata(o).ok());
        let changed = om.as_ref().is_none_or(|om| differs(&m, om, &p, o.as_deref().unwrap_or(&p), shared));
        if m.is_dir() {
            if changed {
                tar.append_dir(&arc, &p)?;
            }
            let into = o.as_deref().filter(|_| om.as_ref().is_some_and(|om| om.is_dir()));
            layer(tar, &p, into, &arc, shared)?;
        } else if changed {
            append_entry(tar, &p, &m, &arc)?;
        }
    }
    // Whiteouts for what the origin had and this root does not.
    if let Some(origin) = origin {
        let gone: Vec<_> = sorted_names(origin)?.into_iter().filter(|n| !names.contains(n)).collect();
        for n in gone {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o600);
            h.set_mtime(0);
            let wh = name.join(format!(".wh.{}", n.to_string_lossy()));
            tar.append_data(&mut h, wh, std::io::empty())?;
        }
    }
    Ok(())
}

/// Adds one entry that is not a directory under the name `arc`. Device nodes and FIFOs get a
/// header of their own: the tar crate's `append_path_with_name` names them by their path on
/// this machine instead (an absolute path, which it then refuses). Sockets cannot be in a
/// tar; they are left out, as GNU tar leaves them.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    p: &Path,
    m: &std::fs::Metadata,
    arc: &Path,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let ft = m.file_type();
    let kind = if ft.is_fifo() {
        tar::EntryType::Fifo
    } else if ft.is_char_device() {
        tar::EntryType::Char
    } else if ft.is_block_device() {
        tar::EntryType::Block
    } else if ft.is_socket() {
        return Ok(());
    } else {
        return tar.append_path_with_name(p, arc);
    };
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(m, tar::HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_size(0);
    let dev = m.rdev();
    h.set_device_major((((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as u32)?;
    h.set_device_minor((((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as u32)?;
    tar.append_data(&mut h, arc, std::io::empty())
}

/// Streams a tar written by `fill` through the compressor into `out`; returns the file's
/// sha1 and size.
fn write_image_with(
    out: &Path,
    compression: Compression,
    fill: impl FnOnce(&mut tar::Builder<Box<dyn archive::FinishWrite + '_>>) -> std::io::Result<()>,
) -> Result<(String, u64)> {
    write_stream_with(out, compression, |enc| {
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        fill(&mut tar)?;
        tar.into_inner()
    })
}

/// A zvol image's file: the raw disk, compressed.
pub fn write_disk_file(disk: &Path, out: &Path, compression: Compression) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(disk).map_err(|e| ImgError::io("open", disk, e))?;
    write_stream_with(out, compression, |mut enc| {
        std::io::copy(&mut f, &mut enc)?;
        Ok(enc)
    })
}

/// Writes whatever `fill` puts through the compressor into `out`; returns sha1 and size.
fn write_stream_with<'a>(
    out: &Path,
    compression: Compression,
    fill: impl FnOnce(Box<dyn archive::FinishWrite + 'a>) -> std::io::Result<Box<dyn archive::FinishWrite + 'a>>,
) -> Result<(String, u64)> {
    let file = std::fs::File::create(out).map_err(|e| ImgError::io("create", out, e))?;
    let pb = progress::bytes(None, "writing image");
    let hw = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        sha1: sha1::Sha1::new(),
        len: 0,
        pb: pb.clone(),
    };
    let hw = std::rc::Rc::new(std::cell::RefCell::new(hw));
    {
        let enc =
            archive::encoder(compression, SharedWriter(hw.clone())).map_err(|e| ImgError::io("compress", out, e))?;
        let enc = fill(enc).map_err(|e| ImgError::io("archive", out, e))?;
        enc.finish().map_err(|e| ImgError::io("write", out, e))?;
    }
    pb.finish_and_clear();
    let hw = std::rc::Rc::try_unwrap(hw).map_err(|_| ImgError::Build("image writer still shared".into()))?.into_inner();
    let mut inner = hw.inner;
    inner.flush().map_err(|e| ImgError::io("write", out, e))?;
    inner.get_ref().sync_all().map_err(|e| ImgError::io("sync", out, e))?;
    Ok((hex::encode(hw.sha1.finalize()), hw.len))
}

struct SharedWriter<W: Write>(std::rc::Rc<std::cell::RefCell<HashingWriter<W>>>);

impl<W: Write> Write for SharedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// A manifest for a new image, without its file yet.
pub fn new_manifest(spec: &BuildSpec) -> Manifest {
    Manifest {
        v: 2,
        uuid: spec.uuid.unwrap_or_else(Uuid::new_v4),
        owner: None,
        name: spec.name.clone(),
        version: spec.version.clone(),
        description: spec.description.clone(),
        homepage: None,
        eula: None,
        icon: None,
        state: Some(hull_spec::manifest::ImageState::Active),
        error: None,
        disabled: Some(false),
        activated: None,
        public: Some(false),
        published_at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        image_type: spec.image_type,
        os: spec.os,
        origin: None,
        files: Vec::new(),
        acl: None,
        requirements: None,
        users: None,
        generate_passwords: None,
        inherited_directories: None,
        billing_tags: None,
        traits: None,
        tags: None,
        channels: None,
        nic_driver: None,
        disk_driver: None,
        cpu_type: None,
        image_size: None,
        urn: None,
    }
}

/// Builds the image that `spec` describes into `spec.out_dir`.
pub fn build(spec: &BuildSpec) -> Result<Built> {
    let probe = new_manifest(spec);
    // Check name, version and what debootstrap is given before spending a minute in it.
    probe.validate().map_err(|e| ImgError::Build(e.to_string()))?;
    if let RootSource::Debootstrap(d) | RootSource::Guest { debian: Some(d), .. } = &spec.source {
        d.check()?;
    }
    archive::encoder(spec.compression, std::io::sink()).map_err(|_| {
        ImgError::Build(format!("compression {} is not supported (gzip, zstd or none)", spec.compression.as_str()))
    })?;
    std::fs::create_dir_all(&spec.out_dir).map_err(|e| ImgError::io("create directory", &spec.out_dir, e))?;
    let stage = tempfile::Builder::new()
        .prefix(".hull-build-")
        .tempdir_in(&spec.out_dir)
        .map_err(|e| ImgError::io("create staging directory in", &spec.out_dir, e))?;
    if let RootSource::Guest { kernel, modules, debian } = &spec.source {
        let stage = tempfile::Builder::new()
            .prefix(".hull-guest-")
            .tempdir_in(&spec.out_dir)
            .map_err(|e| ImgError::io("create staging directory in", &spec.out_dir, e))?;
        let disk = stage.path().join("disk.raw");
        let root = match debian {
            Some(d) => {
                let r = stage.path().join("root");
                let mut d = d.clone();
                d.packages.extend(["udev".to_string(), "dbus".to_string()]);
                debootstrap_root(&r, &d)?;
                write_file(&r.join("etc/fstab"), "LABEL=hullroot / ext4 defaults 0 1\n", 0o644)?;
                Some(r)
            }
            None => None,
        };
        crate::guest::disk(kernel, modules, root.as_deref(), stage.path(), &disk)?;
        let mut m = probe;
        m.image_type = ImageType::Zvol;
        m.image_size = Some(std::fs::metadata(&disk).map(|d| d.len()).unwrap_or(0).div_ceil(1 << 20));
        return emit(m, &spec.out_dir, spec.compression, |f| write_disk_file(&disk, f, spec.compression));
    }
    if let RootSource::Disk(disk) = &spec.source {
        let len = std::fs::metadata(disk).map_err(|e| ImgError::io("read", disk, e))?.len();
        let mut m = probe;
        m.image_type = ImageType::Zvol;
        m.image_size = Some(len.div_ceil(1 << 20));
        return emit(m, &spec.out_dir, spec.compression, |f| write_disk_file(disk, f, spec.compression));
    }
    let root = match &spec.source {
        RootSource::Dir(d) => {
            if !d.is_dir() {
                return Err(ImgError::Build(format!("{} is not a directory", d.display())));
            }
            d.clone()
        }
        RootSource::Busybox => {
            let r = stage.path().join("root");
            busybox_root(&r)?;
            r
        }
        RootSource::Debootstrap(d) => {
            let r = stage.path().join("root");
            debootstrap_root(&r, d)?;
            r
        }
        RootSource::Disk(_) | RootSource::Guest { .. } => unreachable!("handled above"),
    };
    emit(probe, &spec.out_dir, spec.compression, |f| write_image_file(&root, f, spec.compression))
}

/// The name `NAME-VERSION` that an image's files are written under in the output directory:
/// a name or version may hold '/', which would make it a path, so each becomes '_'.
pub fn file_base(manifest: &Manifest) -> String {
    format!("{}-{}", manifest.name, manifest.version).replace('/', "_")
}

/// Writes an image's file (with `write`) and its manifest into `out_dir` as
/// `<name>-<version>.json` and `<name>-<version><suffix>`, each appearing whole or not at all.
pub fn emit(
    mut manifest: Manifest,
    out_dir: &Path,
    compression: Compression,
    write: impl FnOnce(&Path) -> Result<(String, u64)>,
) -> Result<Built> {
    std::fs::create_dir_all(out_dir).map_err(|e| ImgError::io("create directory", out_dir, e))?;
    let base = file_base(&manifest);
    let file_path = out_dir.join(format!("{base}{}", compression.suffix()));
    let manifest_path = out_dir.join(format!("{base}.json"));
    // An image file is for publishing: readable by all, as its manifest is (a temporary
    // file would otherwise keep its 0600).
    let tmp = tempfile::Builder::new()
        .prefix(".hull-image-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(out_dir)
        .map_err(|e| ImgError::io("create a file in", out_dir, e))?;
    let (sha1, size) = write(tmp.path())?;
    manifest.files = vec![ImageFile {
        sha1,
        size,
        compression,
        dataset_guid: None,
        stor: None,
        digest: None,
        uncompressed_digest: None,
    }];
    // Active, as IMGAPI serves an image that has its file.
    manifest.activated = Some(true);
    tmp.persist(&file_path).map_err(|e| ImgError::io("rename", &file_path, e.error))?;
    crate::db::write_atomic(&manifest_path, manifest.to_json_pretty().as_bytes())?;
    Ok(Built { manifest, manifest_path, file_path })
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ImgError::io("create directory", dir, e))?;
    }
    std::fs::write(path, text).map_err(|e| ImgError::io("write", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| ImgError::io("chmod", path, e))
}

const INITTAB: &str = "\
::sysinit:/etc/init.d/rcS
::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
";

const RCS: &str = "#!/bin/sh
mkdir -p /run /var/run /var/log
# The VM's metadata at boot (user-script once, root's keys), as SmartOS's mdata:execute.
[ -x /.zonecontrol/bin/mdata-execute ] && (/.zonecontrol/bin/mdata-execute >>/var/log/mdata-execute.log 2>&1 &)
";

/// A Debian zone's first-boot step: hull's mdata-execute, as SmartOS's mdata:execute.
const MDATA_UNIT: &str = "[Unit]
Description=This VM's metadata at boot (user-script once, root's keys), as SmartOS's mdata:execute
ConditionPathExists=/.zonecontrol/bin/mdata-execute
# An image with cloud-init lets it run the metadata (its SmartOS datasource does the same).
ConditionPathExists=!/run/cloud-init/enabled
After=network.target

[Service]
Type=oneshot
ExecStart=/.zonecontrol/bin/mdata-execute
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
";

/// What hull's Debian images add to cloud-init's configuration when they carry it.
const CLOUD_CFG: &str = "# hull: SmartOS's metadata, from a hull zone's socket or a KVM guest's ttyS1.
# Only SmartOS is listed, so ds-identify enables it without looking: it would take a zone
# for a container and skip it.
datasource_list: [ SmartOS, None ]
datasource:
  SmartOS:
    metadata_sockfile: /.zonecontrol/metadata.sock
# root_authorized_keys let root log in, as on SmartOS (Debian's default puts a refusal in
# front of them in favour of a user it makes).
disable_root: false
# A minimal image has no en_US.UTF-8 to switch to.
locale: C.UTF-8
";

/// A busybox root: the static binary, a link per applet, and the files a shell wants.
pub fn busybox_root(root: &Path) -> Result<()> {
    let busybox = tool("busybox");
    if !busybox.is_absolute() {
        return Err(ImgError::Build("busybox is not installed (Debian: apt-get install busybox-static)".into()));
    }
    let listing = CommandLine::new(&busybox).arg("--list-full").run()?;
    for d in ["bin", "sbin", "usr/bin", "usr/sbin", "etc/init.d", "dev", "proc", "sys", "root", "var/log", "run"] {
        let p = root.join(d);
        std::fs::create_dir_all(&p).map_err(|e| ImgError::io("create directory", &p, e))?;
    }
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(|e| ImgError::io("create directory", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| ImgError::io("chmod", &tmp, e))?;
    let bin = root.join("bin/busybox");
    std::fs::copy(&busybox, &bin).map_err(|e| ImgError::io("copy busybox to", &bin, e))?;
    for applet in listing.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "bin/busybox") {
        let rel = applet.trim_start_matches('/');
        if rel.contains("..") {
            continue;
        }
        let link = root.join(rel);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ImgError::io("create directory", dir, e))?;
        }
        if !link.exists() {
            std::os::unix::fs::symlink("/bin/busybox", &link).map_err(|e| ImgError::io("symlink", &link, e))?;
        }
    }
    write_file(
        &root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    )?;
    write_file(&root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    write_file(&root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n", 0o600)?;
    write_file(&root.join("etc/hostname"), "busybox\n", 0o644)?;
    write_file(&root.join("etc/hosts"), "127.0.0.1 localhost\n::1 localhost\n", 0o644)?;
    write_file(&root.join("etc/inittab"), INITTAB, 0o644)?;
    write_file(&root.join("etc/init.d/rcS"), RCS, 0o755)?;
    write_file(&root.join("etc/os-release"), "NAME=\"busybox\"\nID=busybox\n", 0o644)?;
    tool_links(root)
}

/// Installs `packages` into a Debian root with its own apt (debootstrap's resolver does not
/// follow virtual packages: cloud-init's python3-cryptography needs one), in a mount
/// namespace of its own so that the root's `/proc` goes away with it, whatever happens, and
/// with services kept from starting (`policy-rc.d`).
fn apt_install(root: &Path, packages: &[String], cache: Option<&Path>) -> Result<()> {
    let policy = root.join("usr/sbin/policy-rc.d");
    write_file(&policy, "#!/bin/sh\nexit 101\n", 0o755)?;
    let pb = progress::bytes(None, "apt-get install");
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    // The cache, when there is one, is apt's archives for this run only: the binding goes
    // with the namespace, and the root's own archives stay empty.
    let res = CommandLine::new("/usr/bin/env")
        .args(["-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"])
        .args(["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(concat!(
            r#"root=$1 cache=$2 && shift 2 && mount -t proc proc "$root/proc" && "#,
            r#"{ [ -z "$cache" ] || mount --bind "$cache" "$root/var/cache/apt/archives"; } && "#,
            r#"exec chroot "$root" apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "$@""#
        ))
        .arg("sh")
        .arg(root)
        .arg(cache.map(Path::as_os_str).unwrap_or_default())
        .args(packages)
        .run();
    pb.finish_and_clear();
    let _ = std::fs::remove_file(&policy);
    res.map_err(bld("apt-get install"))?;
    Ok(())
}

/// Where a zone finds hull's tools by name, as on SmartOS: `/usr/sbin/mdata-get` and the
/// others, each a link to `/.zonecontrol/bin`, which hull binds into every OS zone (in a KVM
/// guest they dangle, and are not found). A file the image already has under a name is left
/// alone.
fn tool_links(root: &Path) -> Result<()> {
    let dir = root.join("usr/sbin");
    std::fs::create_dir_all(&dir).map_err(|e| ImgError::io("create directory", &dir, e))?;
    for name in ["mdata-get", "mdata-put", "mdata-delete", "mdata-list"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("/.zonecontrol/bin/{name}"), &link)
                .map_err(|e| ImgError::io("symlink", &link, e))?;
        }
    }
    Ok(())
}

/// cloud-init's units read `/.zonecontrol/cloud-init.env` when it is there: in a hull zone
/// it preloads libhull-brandz.so, which gives them an LX zone's `uname -v`, the one way
/// cloud-init's SmartOS datasource recognises a zone; in a KVM guest there is no such file
/// and cloud-init finds SmartOS by its SMBIOS product name, as on SmartOS.
const CLOUD_INIT_UNITS: &[&str] = &["cloud-init-local", "cloud-init", "cloud-config", "cloud-final"];

const CLOUD_INIT_DROPIN: &str = "# hull: an LX zone's uname for cloud-init in a hull zone (nothing in a KVM guest).
[Service]
EnvironmentFile=-/.zonecontrol/cloud-init.env
";

/// Makes an image's cloud-init, when it has one, SmartOS's: the SmartOS datasource only,
/// over the zone's socket (`/.zonecontrol/metadata.sock`; SmartOS's LX zones have it under
/// `/native`) or the guest's ttyS1, root's keys from the metadata, and the units' drop-ins.
fn cloud_init_for_hull(root: &Path) -> Result<()> {
    if !root.join("etc/cloud/cloud.cfg").is_file() {
        return Ok(());
    }
    write_file(&root.join("etc/cloud/cloud.cfg.d/90_hull.cfg"), CLOUD_CFG, 0o644)?;
    for unit in CLOUD_INIT_UNITS {
        let p = root.join(format!("etc/systemd/system/{unit}.service.d/hull.conf"));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| ImgError::io("create directory", d, e))?;
        }
        write_file(&p, CLOUD_INIT_DROPIN, 0o644)?;
    }
    Ok(())
}

/// A Debian package name (Debian policy 5.6.1): lower-case letters, digits, `+`, `-`, `.`,
/// at least two characters, starting with a letter or digit.
pub fn package_name(p: &str) -> bool {
    p.len() >= 2
        && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
}

/// A Debian root from debootstrap, with systemd as init and the package caches emptied,
/// and `d.packages` besides (a KVM guest adds udev and dbus: udev tags the ACPI power
/// button, and systemd-logind, which needs dbus, powers the guest off when it is pressed).
pub fn debootstrap_root(root: &Path, d: &Debian) -> Result<()> {
    let Debian { suite, mirror, packages, cache } = d;
    let debootstrap = tool("debootstrap");
    if !debootstrap.is_absolute() {
        return Err(ImgError::Build("debootstrap is not installed (Debian: apt-get install debootstrap)".into()));
    }
    d.check()?;
    let cache = match cache {
        Some(c) => {
            std::fs::create_dir_all(c).map_err(|e| ImgError::io("create package cache", c, e))?;
            Some(std::fs::canonicalize(c).map_err(|e| ImgError::io("resolve package cache", c, e))?)
        }
        None => None,
    };
    // Builds sharing a cache take turns at fetching into it (two downloads into one file
    // would spoil it); the long unpacking runs without the lock.
    let hold = |c: &Path| {
        hull_storage::lock::lock(&c.join(".hull-build.lock"))
            .map_err(|e| ImgError::Build(format!("package cache {}: {e}", c.display())))
    };
    let pb = progress::bytes(None, "debootstrap");
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    // The spinner draws only on a terminal; a log or a pipe is told once what the wait is.
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tracing::info!(suite, mirror, "debootstrap: fetching and unpacking Debian (a minute or more)");
    }
    let run = |target: &Path, download_only: bool| {
        let mut cmd = CommandLine::new(&debootstrap);
        if let Some(c) = &cache {
            cmd = cmd.arg(format!("--cache-dir={}", c.display()));
        }
        if download_only {
            cmd = cmd.arg("--download-only");
        }
        cmd.arg("--variant=minbase")
            .arg("--include=systemd-sysv,iproute2,ifupdown,procps")
            .arg(suite)
            .arg(target)
            .arg(mirror)
            .run()
            .map_err(bld("debootstrap"))
    };
    let res = (|| {
        if let Some(c) = &cache {
            let _held = hold(c)?;
            let parent = root.parent().unwrap_or(Path::new("/tmp"));
            let scratch = tempfile::Builder::new()
                .prefix(".hull-debootstrap-")
                .tempdir_in(parent)
                .map_err(|e| ImgError::io("create scratch directory in", parent, e))?;
            run(&scratch.path().join("root"), true)?;
        }
        run(root, false)
    })();
    pb.finish_and_clear();
    res?;
    if !packages.is_empty() {
        let _held = cache.as_deref().map(hold).transpose()?;
        apt_install(root, packages, cache.as_deref())?;
    }
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let d = root.join(dir);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    write_file(&root.join("etc/hostname"), "debian\n", 0o644)?;
    // hull's first-boot unit, enabled (a KVM guest has no /.zonecontrol: it is skipped there).
    write_file(&root.join("etc/systemd/system/hull-mdata-execute.service"), MDATA_UNIT, 0o644)?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(|e| ImgError::io("create directory", &wants, e))?;
    let link = wants.join("hull-mdata-execute.service");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("/etc/systemd/system/hull-mdata-execute.service", &link)
            .map_err(|e| ImgError::io("symlink", &link, e))?;
    }
    tool_links(root)?;
    cloud_init_for_hull(root)?;
    // An image ships no machine id: each VM made from it gets its own.
    if root.join("etc/machine-id").is_file() {
        write_file(&root.join("etc/machine-id"), "", 0o444)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_debian_s() {
        for good in ["cloud-init", "openssh-server", "libc6", "g++", "python3.11", "0ad"] {
            assert!(package_name(good), "{good}");
        }
        for bad in ["", "a", "Upper", "-lead", ".lead", "a b", "a;b", "../x", "a/b", "a_b", "pkg=1.0"] {
            assert!(!package_name(bad), "{bad}");
        }
        let mut d = Debian::new("bookworm", DEFAULT_MIRROR);
        assert!(d.check().is_ok());
        d.packages.push("bad;name".into());
        assert!(d.check().expect_err("a bad package name").to_string().contains("invalid package name"));
    }

    #[test]
    fn an_image_named_with_slashes_is_written_in_the_output_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("mkdir");
        let spec = BuildSpec {
            source: RootSource::Dir(root.clone()),
            name: "snap of a/b".into(),
            version: "1.0/2".into(),
            description: None,
            image_type: hull_spec::manifest::ImageType::ZoneDataset,
            os: hull_spec::manifest::Os::Linux,
            compression: Compression::None,
            out_dir: out.clone(),
            uuid: None,
        };
        let m = new_manifest(&spec);
        let built = emit(m, &out, Compression::None, |f| write_image_file(&root, f, Compression::None)).expect("emit");
        assert_eq!(built.file_path.parent(), Some(out.as_path()), "{}", built.file_path.display());
        assert_eq!(built.manifest_path, out.join("snap of a_b-1.0_2.json"));
        assert!(built.file_path.is_file() && built.manifest_path.is_file());
    }
}
