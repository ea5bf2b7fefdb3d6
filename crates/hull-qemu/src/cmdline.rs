//! qemu's command line from a KVM VM's payload, as SmartOS's vmadm builds it for its qemu:
//! `ram`, `vcpus`, `cpu_type`, `disks[]`, `nics[]`, `vnc_port`, `qemu_opts` and
//! `qemu_extra_opts`.

use crate::probe::Accel;
use serde_json::{Map, Value};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskModel {
    Virtio,
    Ide,
    Scsi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: PathBuf,
    pub model: DiskModel,
    pub cdrom: bool,
    pub boot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicDev {
    /// The tap device qemu opens.
    pub ifname: String,
    pub mac: String,
    /// virtio, e1000 or rtl8139.
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub ram_mib: u64,
    pub vcpus: u32,
    pub cpu_type: Option<String>,
    pub disks: Vec<Disk>,
    pub nics: Vec<NicDev>,
    pub vnc_port: Option<u16>,
    pub qemu_opts: Option<String>,
    pub qemu_extra_opts: Option<String>,
}

/// Where qemu's control and serial sockets go.
#[derive(Debug, Clone)]
pub struct Sockets {
    pub qmp: PathBuf,
    pub serial: PathBuf,
    /// Where the serial port's output is also written, attached or not.
    pub serial_log: Option<PathBuf>,
    /// VNC on a unix socket instead of a TCP port.
    pub vnc: Option<PathBuf>,
    /// The metadata service's serial port (the guest's second, ttyS1, as on SmartOS): a
    /// socket qemu listens on and zoneadmd connects to.
    pub metadata: Option<PathBuf>,
}

/// Reads the qemu part of a KVM payload. `disk_paths[i]` is where disk i's data lives.
pub fn parse(name: &str, cfg: &Map<String, Value>, disk_paths: &[PathBuf]) -> Result<Spec, Vec<String>> {
    let mut problems = Vec::new();
    let ram_mib = cfg.get("ram").and_then(Value::as_u64).unwrap_or(256);
    if ram_mib < 16 {
        problems.push(format!("ram: {ram_mib} MiB is too little to run a guest"));
    }
    let vcpus = cfg.get("vcpus").and_then(Value::as_u64).unwrap_or(1);
    if !(1..=64).contains(&vcpus) {
        problems.push(format!("vcpus: {vcpus} is out of range 1-64"));
    }
    let mut disks = Vec::new();
    let list = cfg.get("disks").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, d) in list.iter().enumerate() {
        let model = match d.get("model").and_then(Value::as_str).unwrap_or("virtio") {
            "virtio" => DiskModel::Virtio,
            "ide" => DiskModel::Ide,
            "scsi" => DiskModel::Scsi,
            other => {
                problems.push(format!("disks.{i}.model: {other:?} is not virtio, ide or scsi"));
                continue;
            }
        };
        let cdrom = match d.get("media").and_then(Value::as_str).unwrap_or("disk") {
            "disk" => false,
            "cdrom" => true,
            other => {
                problems.push(format!("disks.{i}.media: {other:?} is not disk or cdrom"));
                continue;
            }
        };
        let Some(path) = disk_paths.get(i) else {
            problems.push(format!("disks.{i}: no storage for it"));
            continue;
        };
        disks.push(Disk {
            path: path.clone(),
            model,
            cdrom,
            boot: d.get("boot").and_then(Value::as_bool).unwrap_or(false),
        });
    }
    if disks.iter().filter(|d| d.boot).count() > 1 {
        problems.push("disks: more than one is marked boot".into());
    }
    let nics: Vec<NicDev> = cfg
        .get("nics")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, n)| NicDev {
                    // hull-net names the tap after the NIC's interface: net0 is tap0.
                    ifname: format!(
                        "tap{}",
                        n.get("interface")
                            .and_then(Value::as_str)
                            .map(|s| s.trim_start_matches("net").to_string())
                            .unwrap_or(i.to_string())
                    ),
                    mac: n.get("mac").and_then(Value::as_str).unwrap_or_default().to_string(),
                    model: n.get("model").and_then(Value::as_str).unwrap_or("virtio").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    for (i, n) in nics.iter().enumerate() {
        if !["virtio", "e1000", "rtl8139"].contains(&n.model.as_str()) {
            problems.push(format!("nics.{i}.model: {:?} is not virtio, e1000 or rtl8139", n.model));
        }
    }
    let vnc_port = cfg.get("vnc_port").and_then(Value::as_u64).filter(|p| *p > 0);
    if let Some(p) = vnc_port
        && !(5900..=65535).contains(&p)
    {
        problems.push(format!("vnc_port: {p} is below 5900 (VNC display 0)"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Spec {
        name: name.to_string(),
        ram_mib,
        vcpus: vcpus as u32,
        cpu_type: cfg.get("cpu_type").and_then(Value::as_str).map(String::from),
        disks,
        nics,
        vnc_port: vnc_port.map(|p| p as u16),
        qemu_opts: cfg.get("qemu_opts").and_then(Value::as_str).map(String::from),
        qemu_extra_opts: cfg.get("qemu_extra_opts").and_then(Value::as_str).map(String::from),
    })
}

/// Splits options as a shell would for plain words and quotes (no expansions).
pub fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quote, mut any) = (None, false);
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The whole command line after the binary. `qemu_opts`, when set, replaces the devices
/// hull would add (memory, CPUs, disks, NICs, VNC); the name, the sockets, the accelerator
/// and the sandbox stay. `qemu_extra_opts` goes last.
pub fn args(spec: &Spec, accel: Accel, sockets: &Sockets) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "-name".into(),
        spec.name.clone(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-accel".into(),
        accel.as_str().into(),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sockets.qmp.display()),
        "-chardev".into(),
        format!(
            "socket,id=serial0,path={},server=on,wait=off{}",
            sockets.serial.display(),
            sockets.serial_log.as_ref().map(|l| format!(",logfile={},logappend=on", l.display())).unwrap_or_default()
        ),
        "-serial".into(),
        "chardev:serial0".into(),
    ];
    if let Some(m) = &sockets.metadata {
        a.extend([
            "-chardev".into(),
            format!("socket,id=mdata,path={},server=on,wait=off", m.display()),
            "-serial".into(),
            "chardev:mdata".into(),
        ]);
    }
    // SmartOS's identity for its guests: cloud-init's SmartOS datasource looks for this
    // product name before it talks to the second serial port.
    let is_uuid = spec.name.len() == 36 && spec.name.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let id = if is_uuid { format!(",serial={0},uuid={0}", spec.name) } else { String::new() };
    a.extend([
        "-smbios".into(),
        format!("type=1,manufacturer=Joyent,product=SmartDC HVM{id}"),
        "-sandbox".into(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
    ]);
    match &spec.qemu_opts {
        Some(o) => a.extend(split(o)),
        None => {
            a.extend(["-m".into(), spec.ram_mib.to_string(), "-smp".into(), spec.vcpus.to_string()]);
            // SmartOS's default, under either accelerator: `host` is faster but not safe
            // everywhere (nested KVM here makes qemu abort setting an MSR); ask for it by name.
            let cpu = spec.cpu_type.clone().unwrap_or_else(|| "qemu64".into());
            a.extend(["-cpu".into(), cpu]);
            let scsi = spec.disks.iter().any(|d| d.model == DiskModel::Scsi);
            if scsi {
                a.extend(["-device".into(), "virtio-scsi-pci,id=scsi0".into()]);
            }
            for (i, d) in spec.disks.iter().enumerate() {
                let media = if d.cdrom { ",media=cdrom,readonly=on" } else { "" };
                let boot = if d.boot { ",bootindex=1" } else { "" };
                let drive = format!("file={},if=none,id=disk{i},format=raw,cache=none{media}", d.path.display());
                let device = match (d.model, d.cdrom) {
                    (DiskModel::Virtio, false) => format!("virtio-blk-pci,drive=disk{i}{boot}"),
                    (DiskModel::Scsi, false) => format!("scsi-hd,drive=disk{i},bus=scsi0.0{boot}"),
                    (DiskModel::Scsi, true) => format!("scsi-cd,drive=disk{i},bus=scsi0.0{boot}"),
                    (_, true) | (DiskModel::Ide, false) => {
                        format!("{},drive=disk{i}{boot}", if d.cdrom { "ide-cd" } else { "ide-hd" })
                    }
                };
                a.extend(["-drive".into(), drive, "-device".into(), device]);
            }
            for (i, n) in spec.nics.iter().enumerate() {
                let model = match n.model.as_str() {
                    "virtio" => "virtio-net-pci",
                    other => other,
                };
                a.extend([
                    "-netdev".into(),
                    format!("tap,id=net{i},ifname={},script=no,downscript=no", n.ifname),
                    "-device".into(),
                    format!("{model},netdev=net{i},mac={}", n.mac),
                ]);
            }
            match (&sockets.vnc, spec.vnc_port) {
                // In a zone: a unix socket, which the zone's supervisor serves on the host's loopback.
                (Some(sock), Some(_)) => a.extend(["-vnc".into(), format!("unix:{}", sock.display())]),
                (None, Some(p)) => a.extend(["-vnc".into(), format!("127.0.0.1:{}", p - 5900)]),
                (_, None) => a.extend(["-display".into(), "none".into()]),
            }
        }
    }
    if let Some(x) = &spec.qemu_extra_opts {
        a.extend(split(x));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    fn sockets() -> Sockets {
        Sockets {
            qmp: "/run/q.sock".into(),
            serial: "/run/s.sock".into(),
            serial_log: Some("/run/c.log".into()),
            vnc: None,
            metadata: Some("/run/m.sock".into()),
        }
    }

    #[test]
    fn a_payload_becomes_a_command_line() {
        let c = cfg(json!({"ram": 512, "vcpus": 2, "vnc_port": 5901,
            "disks": [{"boot": true, "model": "virtio"}, {"model": "ide", "media": "cdrom"}, {"model": "scsi"}],
            "nics": [{"mac": "02:00:00:00:00:01", "model": "virtio"}], "qemu_extra_opts": "-kernel '/k k' -append \"console=ttyS0 quiet\""}));
        let s = parse("vm1", &c, &["/d0".into(), "/d1".into(), "/d2".into()]).expect("valid");
        let a = args(&s, Accel::Tcg, &sockets()).join(" ");
        for want in [
            "-accel tcg",
            "-m 512 -smp 2 -cpu qemu64",
            "virtio-blk-pci,drive=disk0,bootindex=1",
            "ide-cd,drive=disk1",
            "media=cdrom,readonly=on",
            "virtio-scsi-pci,id=scsi0",
            "scsi-hd,drive=disk2,bus=scsi0.0",
            "tap,id=net0,ifname=tap0",
            "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01",
            "-vnc 127.0.0.1:1",
            "-sandbox on,",
            "-qmp unix:/run/q.sock,server=on,wait=off",
            "path=/run/s.sock,server=on,wait=off,logfile=/run/c.log,logappend=on",
        ] {
            assert!(a.contains(want), "{want} missing from {a}");
        }
        let v = args(&s, Accel::Tcg, &sockets());
        assert!(
            v.ends_with(&["-kernel".into(), "/k k".into(), "-append".into(), "console=ttyS0 quiet".into()]),
            "{v:?}"
        );
        assert!(args(&s, Accel::Kvm, &sockets()).join(" ").contains("-accel kvm -qmp"), "kvm");
    }

    #[test]
    fn qemu_opts_replace_the_devices() {
        let c = cfg(json!({"qemu_opts": "-m 64 -display none"}));
        let s = parse("vm1", &c, &[]).expect("valid");
        let a = args(&s, Accel::Tcg, &sockets()).join(" ");
        assert!(a.contains("-m 64 -display none") && !a.contains("-smp"), "{a}");
    }

    #[test]
    fn bad_payloads_name_each_problem() {
        let c = cfg(json!({"ram": 4, "vcpus": 0, "vnc_port": 80,
            "disks": [{"model": "floppy"}, {"media": "tape"}, {"boot": true}, {"boot": true}], "nics": [{"model": "ne2000"}]}));
        let e = parse("vm1", &c, &["/a".into(), "/b".into(), "/c".into(), "/d".into()]).expect_err("invalid");
        let all = e.join("\n");
        for want in [
            "ram",
            "vcpus",
            "vnc_port",
            "disks.0.model",
            "disks.1.media",
            "more than one is marked boot",
            "nics.0.model",
        ] {
            assert!(all.contains(want), "{want} missing from {all}");
        }
    }

    #[test]
    fn splitting_keeps_quoted_words() {
        assert_eq!(split(r#"-a 'b c' "d e" f''"#), vec!["-a", "b c", "d e", "f"]);
        assert_eq!(split("  "), Vec::<String>::new());
        assert_eq!(split("''"), vec![""]);
    }
}
