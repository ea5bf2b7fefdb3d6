use crate::table::{self, Filter};
use crate::{CmdResult, Failure, print_json};
use clap::Subcommand;
use hull_img::build::{BuildSpec, RootSource};
use hull_img::{Image, Imgadm, Imported};
use hull_spec::manifest::{ImageType, Os};
use hull_spec::{Compression, Manifest};
use hull_storage::Node;
use std::io::IsTerminal;
use std::path::PathBuf;
use uuid::Uuid;

const LIST_COLUMNS: &str = "uuid,name,version,os,type,pub";
const LIST_SORT: &str = "published_at,name";

#[derive(clap::Args)]
pub struct ListOpts {
    #[arg(short = 'j')]
    json: bool,
    /// No header; tab-separated.
    #[arg(short = 'H')]
    no_header: bool,
    /// Columns, e.g. uuid,name,clones.
    #[arg(short = 'o', default_value = LIST_COLUMNS)]
    columns: String,
    /// Sort keys; -key sorts descending.
    #[arg(short = 's', default_value = LIST_SORT, allow_hyphen_values = true)]
    sort: String,
    /// FIELD=VALUE or FIELD=~SUBSTRING
    filters: Vec<Filter>,
}

// Parsed once per run from the command line: the size of its largest variant (build's
// options) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ImgCmd {
    /// List installed images.
    List(ListOpts),
    /// Show an installed image as JSON.
    Get { uuid: Uuid },
    /// Show the manifest of an image in the sources.
    Show { uuid: Uuid },
    /// Install an image from a manifest and a file.
    Install {
        #[arg(short = 'm')]
        manifest: PathBuf,
        #[arg(short = 'f')]
        file: PathBuf,
        #[arg(short = 'q')]
        quiet: bool,
        #[arg(short = 'j')]
        json: bool,
    },
    /// Delete an installed image that nothing is cloned from.
    Delete { uuid: Uuid },
    /// Delete every image that nothing is cloned from.
    Vacuum {
        /// Only say what would be deleted.
        #[arg(short = 'n')]
        dry_run: bool,
        /// Do not ask.
        #[arg(short = 'f')]
        force: bool,
    },
    /// List, add or remove image sources.
    Sources {
        #[arg(short = 'a')]
        add: Option<String>,
        /// With -a: a client certificate (PEM) to show the source, as another hull node's
        /// API asks (`hull api trust add` on that node makes one).
        #[arg(long, requires_all = ["add", "key", "ca"])]
        cert: Option<PathBuf>,
        /// With --cert: its private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// With --cert: the source's CA (PEM, `hull api ca` on that node); only it is trusted.
        #[arg(long, requires = "cert")]
        ca: Option<PathBuf>,
        #[arg(short = 'd')]
        del: Option<String>,
        #[arg(short = 'j')]
        json: bool,
    },
    /// List the images the sources offer.
    Avail(ListOpts),
    /// Import an image (and its origins) from the sources.
    Import {
        uuid: Uuid,
        #[arg(short = 'q')]
        quiet: bool,
    },
    /// Make an image (manifest and file) from a stopped VM: name=NAME version=VERSION.
    Create {
        /// Incremental: only what differs from the VM's image, which becomes the origin.
        #[arg(short = 'i')]
        incremental: bool,
        #[arg(short = 'c', default_value = "gzip")]
        compression: Compression,
        /// Directory for the manifest and the file.
        #[arg(short = 'o', default_value = ".")]
        out: PathBuf,
        uuid: String,
        /// name=NAME version=VERSION
        fields: Vec<String>,
    },
    /// Make a manifest and an image file from a directory, busybox or debootstrap.
    Build {
        /// The root filesystem to pack.
        #[arg(long, group = "from")]
        dir: Option<PathBuf>,
        /// A tiny busybox image (Debian: busybox-static).
        #[arg(long, group = "from")]
        busybox: bool,
        /// A Debian image from debootstrap.
        #[arg(long, group = "from")]
        debootstrap: bool,
        /// A zvol image (for KVM VMs) from a raw disk file.
        #[arg(long, group = "from")]
        disk: Option<PathBuf>,
        /// A zvol image of a KVM guest: this kernel with a busybox initramfs on a disk that
        /// boots from its MBR.
        #[arg(long, group = "from")]
        guest_kernel: Option<PathBuf>,
        /// With --guest-kernel: the kernel modules (.ko) to put in its initramfs.
        #[arg(long, requires = "guest_kernel")]
        guest_modules: Option<PathBuf>,
        /// With --guest-kernel: a Debian root (debootstrap, --suite, --mirror) on a second
        /// partition, which the initramfs switches to.
        #[arg(long, requires = "guest_kernel")]
        guest_debian: bool,
        #[arg(long, default_value = hull_img::build::DEFAULT_SUITE)]
        suite: String,
        #[arg(long, default_value = hull_img::build::DEFAULT_MIRROR)]
        mirror: String,
        /// With --debootstrap or --guest-debian: more Debian packages to install, comma
        /// separated (`--include cloud-init,openssh-server`).
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
        /// With --debootstrap or --guest-debian: keep downloaded packages in DIR for the
        /// next build (each is checked against the mirror's signed index before use).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'v', long = "image-version", default_value = "1.0.0")]
        version: String,
        #[arg(short = 'd', long)]
        description: Option<String>,
        #[arg(short = 'c', long, default_value = "gzip")]
        compression: Compression,
        /// Directory for the manifest and the file.
        #[arg(short = 'o', long, default_value = ".")]
        out: PathBuf,
        #[arg(long)]
        uuid: Option<Uuid>,
        /// The image's type: zone-dataset (joyent brands) or lx-dataset (the lx brand).
        /// Default: lx-dataset for --debootstrap, zone-dataset otherwise (a disk is a zvol).
        #[arg(long = "type", value_parser = ["zone-dataset", "lx-dataset"])]
        image_type: Option<String>,
        #[arg(short = 'j')]
        json: bool,
    },
}

fn image_row(m: &Manifest, extra: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    if let serde_json::Value::Object(map) = &mut v {
        let pubdate = m.published_at.as_deref().map(|p| p.get(..10).unwrap_or(p).to_string());
        map.insert("pub".into(), serde_json::json!(pubdate));
        map.insert("size".into(), serde_json::json!(m.file().map(|f| f.size)));
        if let serde_json::Value::Object(e) = extra {
            map.extend(e);
        }
    }
    v
}

fn print_list(rows: Vec<serde_json::Value>, json_rows: Vec<serde_json::Value>, o: &ListOpts) {
    let keep: Vec<bool> = rows.iter().map(|r| o.filters.iter().all(|f| f.matches(r))).collect();
    let mut pairs: Vec<(serde_json::Value, serde_json::Value)> =
        rows.into_iter().zip(json_rows).zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).collect();
    let keys = table::fields(&o.sort);
    pairs.sort_by(|a, b| table::cmp_rows(&a.0, &b.0, &keys));
    if o.json {
        print_json(&pairs.into_iter().map(|p| p.1).collect::<Vec<_>>());
    } else {
        let rows: Vec<_> = pairs.into_iter().map(|p| p.0).collect();
        print!("{}", table::render(&rows, &table::fields(&o.columns), o.no_header));
    }
}

fn list_rows(images: &[Image]) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let rows = images
        .iter()
        .map(|i| image_row(&i.manifest, serde_json::json!({"clones": i.clones, "zpool": i.zpool, "source": i.source})))
        .collect();
    let json = images.iter().map(|i| serde_json::to_value(i).unwrap_or_default()).collect();
    (rows, json)
}

pub fn run(node: &Node, cmd: ImgCmd) -> CmdResult {
    let img = Imgadm::new(node);
    match cmd {
        ImgCmd::List(o) => {
            let (rows, json) = list_rows(&img.list()?);
            print_list(rows, json, &o);
        }
        ImgCmd::Get { uuid } => print_json(&img.get(&uuid)?),
        ImgCmd::Show { uuid } => print_json(&img.show(&uuid)?.0),
        ImgCmd::Install { manifest, file, quiet, json } => {
            let i = img.install(&manifest, &file)?;
            if json {
                print_json(&i);
            } else if !quiet {
                println!("Installed image {} ({}@{})", i.manifest.uuid, i.manifest.name, i.manifest.version);
            }
        }
        ImgCmd::Delete { uuid } => {
            img.delete(&uuid)?;
            println!("Deleted image {uuid}");
        }
        ImgCmd::Vacuum { dry_run, force } => {
            let doomed = img.vacuum(true)?;
            if doomed.is_empty() {
                println!("Zero unused images to delete.");
                return Ok(());
            }
            for i in &doomed {
                let verb = if dry_run { "[dry-run] Would delete" } else { "Will delete" };
                println!("{verb} image {} ({}@{})", i.manifest.uuid, i.manifest.name, i.manifest.version);
            }
            if dry_run {
                return Ok(());
            }
            if !force {
                if !std::io::stdin().is_terminal() {
                    return Err(Failure::new(1, "refusing to delete images without confirmation: use -f"));
                }
                eprint!("Delete {} image(s)? [y/N] ", doomed.len());
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer).map_err(|e| Failure::new(1, e))?;
                if !answer.trim().eq_ignore_ascii_case("y") {
                    println!("Aborting.");
                    return Ok(());
                }
            }
            for i in img.vacuum(false)? {
                println!("Deleted image {} ({}@{})", i.manifest.uuid, i.manifest.name, i.manifest.version);
            }
        }
        ImgCmd::Sources { add, cert, key, ca, del, json } => {
            if let Some(url) = add {
                let tls = match (cert, key, ca) {
                    (Some(cert), Some(key), Some(ca)) => Some(hull_img::SourceTls { cert, key, ca }),
                    _ => None,
                };
                if img.add_source(&url, tls.as_ref())? {
                    println!("Added \"imgapi\" image source \"{}\"", url.trim_end_matches('/'));
                } else {
                    println!("Already have \"imgapi\" image source \"{}\", no change", url.trim_end_matches('/'));
                }
            }
            if let Some(url) = del {
                if img.del_source(&url)? {
                    println!("Deleted image source \"{}\"", url.trim_end_matches('/'));
                } else {
                    return Err(Failure::new(1, format!("{url} is not an image source")));
                }
            }
            let list = img.sources()?;
            if json {
                print_json(&list);
            } else {
                for s in list {
                    println!("{}", s.url);
                }
            }
        }
        ImgCmd::Avail(o) => {
            let avail = img.avail()?;
            let rows = avail.iter().map(|(m, src)| image_row(m, serde_json::json!({"source": src}))).collect();
            let json = avail.iter().map(|(m, _)| serde_json::to_value(m).unwrap_or_default()).collect();
            print_list(rows, json, &o);
        }
        ImgCmd::Import { uuid, quiet } => match img.import(&uuid)? {
            Imported::AlreadyInstalled(i) => {
                if !quiet {
                    println!(
                        "Image {} ({}@{}) is already installed, skipping",
                        uuid, i.manifest.name, i.manifest.version
                    );
                }
            }
            Imported::Installed(list) => {
                if !quiet {
                    for i in list {
                        println!("Imported image {} ({}@{})", i.manifest.uuid, i.manifest.name, i.manifest.version);
                    }
                }
            }
        },
        ImgCmd::Create { incremental, compression, out, uuid, fields } => {
            let mut name = None;
            let mut version = None;
            for f in &fields {
                match f.split_once('=') {
                    Some(("name", v)) => name = Some(v.to_string()),
                    Some(("version", v)) => version = Some(v.to_string()),
                    _ => return Err(Failure::new(2, format!("unknown field {f:?} (name=NAME version=VERSION)"))),
                }
            }
            let name = name.ok_or_else(|| Failure::new(2, "name=NAME is required"))?;
            let version = version.ok_or_else(|| Failure::new(2, "version=VERSION is required"))?;
            let exe = std::env::current_exe().map_err(|e| Failure::new(1, e))?;
            let vm = hull_vm::Vmadm::open(node, exe)?;
            let built = vm.image_create(&uuid, &name, &version, incremental, compression, &out)?;
            println!("Created image {} ({}@{})", built.manifest.uuid, built.manifest.name, built.manifest.version);
            println!("imgadm install -m {} -f {}", built.manifest_path.display(), built.file_path.display());
        }
        ImgCmd::Build {
            dir,
            busybox,
            debootstrap,
            disk,
            guest_kernel,
            guest_modules,
            guest_debian,
            suite,
            mirror,
            include,
            cache_dir,
            name,
            version,
            description,
            compression,
            out,
            uuid,
            json,
            image_type,
        } => {
            let image_type = match image_type.as_deref() {
                Some("lx-dataset") => ImageType::LxDataset,
                Some(_) => ImageType::ZoneDataset,
                None if debootstrap => ImageType::LxDataset,
                None => ImageType::ZoneDataset,
            };
            if !include.is_empty() && !debootstrap && !guest_debian {
                return Err(Failure::new(
                    2,
                    "--include takes Debian packages: it needs --debootstrap or --guest-debian",
                ));
            }
            if cache_dir.is_some() && !debootstrap && !guest_debian {
                return Err(Failure::new(
                    2,
                    "--cache-dir keeps Debian packages: it needs --debootstrap or --guest-debian",
                ));
            }
            let debian = hull_img::build::Debian { suite, mirror, packages: include, cache: cache_dir };
            let source = match (dir, busybox, debootstrap, disk) {
                _ if guest_kernel.is_some() => RootSource::Guest {
                    kernel: guest_kernel.unwrap_or_default(),
                    modules: guest_modules.unwrap_or_else(|| PathBuf::from("/var/cache/hull/guest")),
                    debian: guest_debian.then_some(debian),
                },
                (Some(d), false, false, None) => RootSource::Dir(d),
                (None, true, false, None) => RootSource::Busybox,
                (None, false, true, None) => RootSource::Debootstrap(debian),
                (None, false, false, Some(d)) => RootSource::Disk(d),
                _ => {
                    return Err(Failure::new(
                        2,
                        "say where the image comes from: --dir DIR, --busybox, --debootstrap, --disk FILE or --guest-kernel FILE",
                    ));
                }
            };
            let built = hull_img::build::build(&BuildSpec {
                source,
                name,
                version,
                description,
                image_type,
                os: Os::Linux,
                compression,
                out_dir: out,
                uuid,
            })?;
            if json {
                print_json(&built);
            } else {
                println!("Built image {} ({}@{})", built.manifest.uuid, built.manifest.name, built.manifest.version);
                println!("imgadm install -m {} -f {}", built.manifest_path.display(), built.file_path.display());
            }
        }
    }
    Ok(())
}
