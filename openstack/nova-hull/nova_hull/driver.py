"""HullDriver: Nova's compute driver for one hull node.

Every call goes to the node's API (docs/api.md) through nova_hull.client; nothing is run on
the host. A Nova instance is the hull VM with the same uuid: a zone (brand joyent,
joyent-minimal or lx) or a KVM/bhyve guest, chosen by the flavor's `hull:brand` extra spec.
What Nova asks that hull cannot do raises NotImplementedError (docs/openstack.md lists it).
"""

import base64
import datetime
import hashlib
import math
import os
import re
import tempfile

import netaddr
import os_resource_classes as orc
from oslo_log import log as logging
from oslo_serialization import jsonutils

import nova.conf
from nova import exception
from nova.compute import power_state
from nova.compute import task_states
from nova.image import glance
from nova.objects import fields as obj_fields
from nova.virt import driver
from nova.virt import hardware

from nova_hull import client as hull_client
from nova_hull import conf as hull_conf

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
hull_conf.register_opts(CONF)

BRANDS = ("joyent", "joyent-minimal", "lx", "kvm", "bhyve")
HVM = ("kvm", "bhyve")

# hull's VM states (vmadm's) as Nova's power states.
POWER_STATES = {
    "running": power_state.RUNNING,
    "stopping": power_state.RUNNING,
    "shutting_down": power_state.RUNNING,
    "stopped": power_state.SHUTDOWN,
    "down": power_state.SHUTDOWN,
    "installed": power_state.SHUTDOWN,
    "failed": power_state.CRASHED,
}

# What marks a VM as Nova's: internal_metadata, which the tenant cannot read.
NOVA_NAME = "nova:instance_name"


def _field(instance, name, default=None):
    """An instance's field as the compute manager loaded it; not loaded is `default` (the
    driver never makes a database round trip of its own)."""
    return getattr(instance, name) if instance.obj_attr_is_set(name) else default


class HullDriver(driver.ComputeDriver):
    capabilities = dict(
        driver.ComputeDriver.capabilities,
        supports_attach_interface=True,
        # hull's images install from Glance as raw data (zvols for KVM, zone images).
        supports_image_type_raw=True,
    )

    def __init__(self, virtapi):
        super().__init__(virtapi)
        self._api = hull_client.Client(
            socket_path=CONF.hull.api_socket,
            url=CONF.hull.api_url,
            ca_file=CONF.hull.ca_file,
            cert_file=CONF.hull.cert_file,
            key_file=CONF.hull.key_file,
            timeout=CONF.hull.api_timeout,
        )
        self._image_api = glance.API()

    # -- talking to the node -------------------------------------------------------------

    def _call(self, method, path, body=None, query=None, raw=False):
        try:
            return self._api.call(method, path, body, query, raw=raw)
        except hull_client.Unreachable as e:
            raise exception.HypervisorUnavailable(host=self._api.where()) from e

    def _change(self, method, path, body=None, query=None):
        try:
            return self._api.change(method, path, body, query, timeout=CONF.hull.job_timeout)
        except hull_client.Unreachable as e:
            raise exception.HypervisorUnavailable(host=self._api.where()) from e

    def _vm(self, instance):
        """The instance's VM, or InstanceNotFound."""
        try:
            return self._call("GET", "/vms/%s" % instance.uuid)
        except hull_client.HullError as e:
            if e.code == "VmNotFound":
                raise exception.InstanceNotFound(instance_id=instance.uuid) from e
            raise

    def _nova_vms(self):
        return [vm for vm in self._call("GET", "/vms") if NOVA_NAME in (vm.get("internal_metadata") or {})]

    def _sysinfo(self):
        return self._call("GET", "/sysinfo")

    # -- the host --------------------------------------------------------------------------

    def init_host(self, host):
        """Checks the node answers; Nova does not start on a node it cannot reach."""
        self._call("GET", "/ping")

    def get_available_nodes(self, refresh=False):
        return [CONF.host]

    def get_host_uptime(self):
        """As uptime(1) says it, from the node's boot time."""
        info = self._sysinfo()
        boot = int(info.get("Boot Time") or 0)
        now = datetime.datetime.now(datetime.timezone.utc)
        up = int(now.timestamp()) - boot if boot else 0
        days, rest = divmod(max(up, 0), 86400)
        hours, rest = divmod(rest, 3600)
        return "%s up %d days, %2d:%02d" % (now.strftime("%H:%M:%S"), days, hours, rest // 60)

    def _usage(self):
        """(vcpus, memory MiB, disk GiB) the node's VMs are given."""
        vcpus = mem = disk = 0
        for vm in self._call("GET", "/vms"):
            if vm.get("brand") in HVM:
                vcpus += int(vm.get("vcpus") or 1)
                mem += int(vm.get("ram") or 0)
                disk += sum(int(d.get("size") or 0) for d in vm.get("disks") or []) // 1024
            else:
                cap = int(vm.get("cpu_cap") or 0)
                vcpus += max(1, math.ceil(cap / 100)) if cap else 1
                mem += int(vm.get("max_physical_memory") or 0)
                disk += int(vm.get("quota") or 0)
        return vcpus, mem, disk

    def _resources(self):
        info = self._sysinfo()
        vcpus_used, mem_used, disk_used = self._usage()
        return {
            "vcpus": int(info.get("CPU Total Cores") or 0),
            "memory_mb": int(info.get("MiB of Memory") or 0),
            "local_gb": int(float(info.get("Zpool Size in GiB") or 0)),
            "vcpus_used": vcpus_used,
            "memory_mb_used": mem_used,
            "local_gb_used": disk_used,
            "info": info,
        }

    def get_available_resource(self, nodename):
        r = self._resources()
        info = r["info"]
        version = str(info.get("Live Image") or "0.0.0").split("-")[0]
        try:
            hv_version = sum(int(p) * 1000**i for i, p in enumerate(reversed(version.split(".")[:3])))
        except ValueError:
            hv_version = 0
        return {
            "vcpus": r["vcpus"],
            "memory_mb": r["memory_mb"],
            "local_gb": r["local_gb"],
            "vcpus_used": r["vcpus_used"],
            "memory_mb_used": r["memory_mb_used"],
            "local_gb_used": r["local_gb_used"],
            "hypervisor_type": "hull",
            "hypervisor_version": hv_version,
            "hypervisor_hostname": nodename or CONF.host,
            "cpu_info": jsonutils.dumps({"arch": obj_fields.Architecture.X86_64, "model": info.get("CPU Type", "")}),
            "disk_available_least": max(0, r["local_gb"] - r["local_gb_used"]),
            # Zones are containers (exe); KVM and bhyve guests are HVM.
            "supported_instances": [
                (obj_fields.Architecture.X86_64, obj_fields.HVType.LXC, obj_fields.VMMode.EXE),
                (obj_fields.Architecture.X86_64, obj_fields.HVType.KVM, obj_fields.VMMode.HVM),
            ],
            "numa_topology": None,
            "stats": {"hull_node_uuid": info.get("UUID", "")},
        }

    def update_provider_tree(self, provider_tree, nodename, allocations=None):
        r = self._resources()
        inventory = provider_tree.data(nodename).inventory
        ratios = self._get_allocation_ratios(inventory)
        result = {
            orc.VCPU: {
                "total": r["vcpus"],
                "min_unit": 1,
                "max_unit": r["vcpus"],
                "step_size": 1,
                "allocation_ratio": ratios[orc.VCPU],
                "reserved": CONF.reserved_host_cpus,
            },
            orc.MEMORY_MB: {
                "total": r["memory_mb"],
                "min_unit": 1,
                "max_unit": r["memory_mb"],
                "step_size": 1,
                "allocation_ratio": ratios[orc.MEMORY_MB],
                "reserved": CONF.reserved_host_memory_mb,
            },
            orc.DISK_GB: {
                "total": r["local_gb"],
                "min_unit": 1,
                "max_unit": r["local_gb"],
                "step_size": 1,
                "allocation_ratio": ratios[orc.DISK_GB],
                "reserved": self._get_reserved_host_disk_gb_from_config(),
            },
        }
        provider_tree.update_inventory(nodename, {k: v for k, v in result.items() if v["total"] > 0})

    # -- instances -------------------------------------------------------------------------

    def list_instances(self):
        return [vm["internal_metadata"][NOVA_NAME] for vm in self._nova_vms()]

    def list_instance_uuids(self):
        return [vm["uuid"] for vm in self._nova_vms()]

    def instance_exists(self, instance):
        try:
            self._vm(instance)
            return True
        except exception.InstanceNotFound:
            return False

    def get_info(self, instance, use_cache=True):
        state = self._vm(instance).get("state", "")
        return hardware.InstanceInfo(state=POWER_STATES.get(state, power_state.NOSTATE))

    def get_console_output(self, context, instance):
        self._vm(instance)
        try:
            out = self._call("GET", "/vms/%s/console" % instance.uuid, query={"bytes": CONF.hull.console_bytes}, raw=True)
        except hull_client.HullError as e:
            if e.code == "VmNotFound":
                raise exception.InstanceNotFound(instance_id=instance.uuid) from e
            raise
        return out.decode("utf-8", "replace")

    # -- spawning --------------------------------------------------------------------------

    @staticmethod
    def _brand(instance):
        specs = getattr(instance.flavor, "extra_specs", None) or {}
        brand = specs.get("hull:brand", CONF.hull.default_brand)
        if brand not in BRANDS:
            raise exception.InstanceDeployFailure(
                reason="flavor %s: hull:brand=%s is not one of %s" % (instance.flavor.name, brand, ", ".join(BRANDS))
            )
        return brand

    @staticmethod
    def _nic_tag(network):
        names = [network.get_meta("physical_network"), network.get("bridge")]
        for name in names:
            if name and name in CONF.hull.nic_tag_mappings:
                return CONF.hull.nic_tag_mappings[name]
        return CONF.hull.default_nic_tag

    def _nics(self, network_info):
        """Nova's VIFs as hull NICs on nic tags: the port's MAC and fixed addresses."""
        nics, resolvers = [], []
        for i, vif in enumerate(network_info or []):
            network = vif["network"]
            ips, gateways = [], []
            for subnet in network["subnets"]:
                prefix = netaddr.IPNetwork(subnet["cidr"]).prefixlen
                for ip in subnet["ips"]:
                    ips.append("%s/%d" % (ip["address"], prefix))
                gw = subnet.get("gateway") or {}
                if gw.get("address") and subnet["version"] == 4:
                    gateways.append(gw["address"])
                resolvers += [d["address"] for d in subnet.get("dns") or [] if d["address"] not in resolvers]
            nic = {
                "interface": "net%d" % i,
                "nic_tag": self._nic_tag(network),
                "mac": vif["address"],
                "ips": ips or ["dhcp"],
                "primary": i == 0,
            }
            if gateways:
                nic["gateways"] = gateways
            vlan = network.get_meta("vlan")
            if vlan:
                nic["vlan_id"] = int(vlan)
            nics.append(nic)
        return nics, resolvers

    def _payload(self, instance, image_meta, admin_password, network_info, power_on):
        brand = self._brand(instance)
        flavor = instance.flavor
        nics, resolvers = self._nics(network_info)
        customer = dict(_field(instance, "metadata") or {})
        user_data = _field(instance, "user_data")
        if user_data:
            try:
                customer["user-data"] = base64.b64decode(user_data).decode("utf-8")
            except (ValueError, UnicodeDecodeError) as e:
                raise exception.InstanceDeployFailure(reason="user_data is not base64 of UTF-8 text: %s" % e) from e
        key_data = _field(instance, "key_data")
        if key_data:
            customer["root_authorized_keys"] = key_data
        internal = {NOVA_NAME: instance.name}
        hostname = _field(instance, "hostname")
        if admin_password:
            internal["root_pw"] = admin_password
        payload = {
            "uuid": instance.uuid,
            "brand": brand,
            "alias": hostname or instance.name,
            "autoboot": bool(power_on),
            "nics": nics,
            "customer_metadata": customer,
            "internal_metadata": internal,
        }
        if hostname:
            payload["hostname"] = hostname
        if resolvers:
            payload["resolvers"] = resolvers
        if brand in HVM:
            payload.update(
                ram=flavor.memory_mb,
                vcpus=flavor.vcpus,
                disks=[{"image_uuid": image_meta.id, "boot": True}],
            )
        else:
            payload.update(
                image_uuid=image_meta.id,
                max_physical_memory=flavor.memory_mb,
                cpu_cap=flavor.vcpus * 100,
            )
            if flavor.root_gb:
                payload["quota"] = flavor.root_gb
            if brand == "lx":
                payload["kernel_version"] = CONF.hull.lx_kernel_version
        return payload

    def _installed(self, image_id):
        try:
            self._call("GET", "/images/%s" % image_id)
            return True
        except hull_client.HullError as e:
            if e.code != "ImageNotFound":
                raise
            return False

    def _ensure_image(self, context, image_id):
        """The image on the node: installed already, installed from Glance's data, or (an
        image Glance does not have) imported from the node's own image sources."""
        if self._installed(image_id):
            return
        try:
            meta = self._image_api.get(context, image_id)
        except exception.ImageNotFound:
            meta = None
        if meta is not None:
            self._install_from_glance(context, image_id, meta)
            return
        try:
            self._change("POST", "/images", {"uuid": image_id}, {"action": "import"})
        except hull_client.HullError as e:
            LOG.warning("image %s is in neither Glance nor the node's sources: %s", image_id, e)
            raise exception.ImageNotFound(image_id=image_id) from e

    @staticmethod
    def _manifest(image_id, meta, size, sha1):
        """A hull image manifest for a Glance image: the one a hull snapshot stored in its
        properties, or, for a raw disk from anywhere, a zvol image of it. Tenants upload
        images with properties of their choosing: the node validates the manifest and the
        file as it does any image's, and its refusal is ImageUnacceptable."""
        props = meta.get("properties") or {}
        image_type = props.get("hull_image_type")
        if not image_type:
            if meta.get("disk_format") != "raw":
                raise exception.ImageUnacceptable(
                    image_id=image_id,
                    reason="hull installs raw disks and hull images, not disk_format %s "
                    "(qemu-img convert -O raw, then upload that)" % meta.get("disk_format"),
                )
            image_type = "zvol"
        compression = props.get("hull_compression", "none")
        manifest = {
            "v": 2,
            "uuid": image_id,
            "name": _image_name(meta.get("name")),
            "version": props.get("hull_version") or "1.0.0",
            "type": image_type,
            "os": props.get("hull_os") or props.get("os_type") or "other",
            "files": [{"sha1": sha1, "size": size, "compression": compression}],
            "description": "from Glance image %s" % image_id,
        }
        if manifest["os"] not in ("smartos", "linux", "windows", "bsd", "illumos", "other"):
            manifest["os"] = "other"
        if props.get("hull_brand"):
            manifest["requirements"] = {"brand": props["hull_brand"]}
        if image_type == "zvol":
            # A tenant may upload an image with any properties: a bad one refuses the image.
            raw = props.get("hull_image_size") or math.ceil(size / (1 << 20))
            try:
                manifest["image_size"] = int(raw)
            except (TypeError, ValueError):
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason="hull_image_size %r is not a number of MiB" % (raw,)
                ) from None
        return manifest

    def _install_from_glance(self, context, image_id, meta):
        """Glance's data for the image, through a temporary file (the node checks size and
        sha1, which it needs before the file), into the node's install."""
        fd, path = tempfile.mkstemp(prefix="hull-image-", dir=_scratch_dir())
        os.close(fd)
        try:
            self._image_api.download(context, image_id, dest_path=path)
            sha1, size = hashlib.sha1(), 0
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha1.update(chunk)
                    size += len(chunk)
            if size == 0:
                raise exception.ImageUnacceptable(image_id=image_id, reason="Glance holds no data for it")
            manifest = self._manifest(image_id, meta, size, sha1.hexdigest())
            try:
                self._call("POST", "/images", manifest, {"action": "install"})
                with open(path, "rb") as f:
                    job = self._api.upload("/images/%s/file" % image_id, f, size, timeout=CONF.hull.job_timeout)
                done = self._api.wait(job["job_uuid"], CONF.hull.job_timeout)
            except hull_client.Unreachable as e:
                raise exception.HypervisorUnavailable(host=self._api.where()) from e
            except hull_client.HullError as e:
                if self._installed(image_id):
                    return  # another spawn of the image installed it meanwhile
                raise exception.ImageUnacceptable(image_id=image_id, reason="hull: %s: %s" % (e.code, e.message)) from e
            err = done.get("error") or {}
            if done.get("execution") != "succeeded" and not self._installed(image_id):
                raise exception.ImageUnacceptable(
                    image_id=image_id, reason="hull: %s: %s" % (err.get("code"), err.get("message"))
                )
            LOG.info("image %s installed on the node from Glance (%d bytes)", image_id, size)
        finally:
            os.unlink(path)

    def spawn(
        self,
        context,
        instance,
        image_meta,
        injected_files,
        admin_password,
        allocations,
        network_info=None,
        block_device_info=None,
        power_on=True,
        accel_info=None,
    ):
        if injected_files:
            LOG.warning("hull does not inject files; use metadata or user_data", instance=instance)
        payload = self._payload(instance, image_meta, admin_password, network_info, power_on)
        self._ensure_image(context, image_meta.id)
        try:
            self._change("POST", "/vms", payload)
        except hull_client.HullError as e:
            if e.code == "VmExists":
                raise exception.InstanceExists(name=instance.name) from e
            if e.code == "ImageNotFound":
                raise exception.ImageNotFound(image_id=image_meta.id) from e
            raise exception.InstanceDeployFailure(reason="hull: %s: %s" % (e.code, e.message)) from e
        LOG.info("spawned as a %s VM on the hull node", payload["brand"], instance=instance)

    def destroy(self, context, instance, network_info, block_device_info=None, destroy_disks=True, destroy_secrets=True):
        try:
            self._change("DELETE", "/vms/%s" % instance.uuid)
        except hull_client.HullError as e:
            if e.code != "VmNotFound":
                raise exception.InstanceTerminationFailure(reason="hull: %s: %s" % (e.code, e.message)) from e
            LOG.info("already gone from the hull node", instance=instance)

    def cleanup(
        self,
        context,
        instance,
        network_info,
        block_device_info=None,
        destroy_disks=True,
        migrate_data=None,
        destroy_vifs=True,
        destroy_secrets=True,
    ):
        """What destroy leaves: nothing (a hull VM's delete takes its datasets and NICs),
        unless Nova keeps the disks, which hull cannot do apart from the VM; so a VM still
        here goes when its disks may, and stays otherwise."""
        if destroy_disks:
            self.destroy(context, instance, network_info, block_device_info, destroy_disks, destroy_secrets)

    # -- power -----------------------------------------------------------------------------

    def _action(self, instance, action, **query):
        self._vm(instance)
        query["action"] = action
        try:
            self._change("POST", "/vms/%s" % instance.uuid, query=query)
        except hull_client.HullError as e:
            if e.code == "VmNotFound":
                raise exception.InstanceNotFound(instance_id=instance.uuid) from e
            if e.code == "WrongState":
                # Already where Nova wants it (stopped and asked to stop, running and
                # asked to start): nothing to do, as other drivers answer.
                LOG.info("%s: %s", action, e.message, instance=instance)
                return
            raise exception.InstancePowerOffFailure(reason=e.message) if action == "stop" else exception.NovaException(
                "hull: %s %s: %s" % (action, e.code, e.message)
            )

    def reboot(
        self,
        context,
        instance,
        network_info,
        reboot_type,
        block_device_info=None,
        bad_volumes_callback=None,
        accel_info=None,
        share_info=None,
    ):
        if self.get_info(instance).state != power_state.RUNNING:
            self._action(instance, "start")
        elif reboot_type == "HARD":
            self._action(instance, "reboot", force="true")
        else:
            self._action(instance, "reboot")

    def power_off(self, instance, timeout=0, retry_interval=0):
        if timeout:
            self._action(instance, "stop", timeout=int(timeout))
        else:
            self._action(instance, "stop", force="true")

    def power_on(self, context, instance, network_info, block_device_info=None, accel_info=None, share_info=None):
        self._action(instance, "start")

    def resume_state_on_host_boot(self, context, instance, network_info, share_info, block_device_info=None):
        """hull's own svc.startd boots autoboot VMs with the node; start what is still down."""
        if self.get_info(instance).state != power_state.RUNNING:
            self._action(instance, "start")

    # -- interfaces ------------------------------------------------------------------------

    def attach_interface(self, context, instance, image_meta, vif):
        vm = self._vm(instance)
        existing = vm.get("nics") or []
        nics, _ = self._nics([vif])
        nic = nics[0]
        nic["interface"] = "net%d" % len(existing)
        nic["primary"] = not existing
        try:
            self._change("POST", "/vms/%s" % instance.uuid, {"add_nics": [nic]}, {"action": "update"})
        except hull_client.HullError as e:
            raise exception.InterfaceAttachFailed(instance_uuid=instance.uuid) from e

    def detach_interface(self, context, instance, vif):
        self._vm(instance)
        try:
            self._change("POST", "/vms/%s" % instance.uuid, {"remove_nics": [vif["address"]]}, {"action": "update"})
        except hull_client.HullError as e:
            raise exception.InterfaceDetachFailed(instance_uuid=instance.uuid) from e

    # -- images ----------------------------------------------------------------------------

    def snapshot(self, context, instance, image_id, update_task_state):
        """An image of the instance (as `imgadm create` makes it), uploaded to the Glance
        image Nova made for it. A running instance is stopped for the image and started
        again before the upload."""
        try:
            vm = self._vm(instance)
        except exception.InstanceNotFound as e:
            raise exception.InstanceNotRunning(instance_id=instance.uuid) from e
        meta = self._image_api.get(context, image_id)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        running = vm.get("state") == "running"
        brand = vm.get("brand")
        query = {
            "action": "create_image",
            "name": _image_name(meta.get("name")),
            "version": "1.0.0",
            "image_uuid": image_id,
            # A KVM disk goes to Glance as a plain raw disk, usable anywhere.
            "compression": "none" if brand in HVM else "gzip",
        }
        if running:
            self._action(instance, "stop", timeout=CONF.shutdown_timeout or 60)
        try:
            made = self._change("POST", "/vms/%s" % instance.uuid, query=query)
        except hull_client.HullError as e:
            raise exception.NovaException("hull: create_image %s: %s" % (e.code, e.message)) from e
        finally:
            if running:
                self._action(instance, "start")
        manifest = made["manifest"]
        update_task_state(task_state=task_states.IMAGE_UPLOADING, expected_state=task_states.IMAGE_PENDING_UPLOAD)
        try:
            with tempfile.TemporaryFile(prefix="hull-snapshot-", dir=_scratch_dir()) as f:
                try:
                    self._api.download("/images/%s/file" % image_id, f, timeout=CONF.hull.job_timeout)
                except hull_client.Unreachable as e:
                    raise exception.HypervisorUnavailable(host=self._api.where()) from e
                f.seek(0)
                props = {
                    "hull_image_type": manifest["type"],
                    "hull_os": manifest.get("os", "other"),
                    "hull_compression": manifest["files"][0]["compression"],
                    "hull_version": manifest["version"],
                    "hypervisor_type": "kvm" if brand in HVM else "lxc",
                }
                if brand:
                    props["hull_brand"] = brand
                if manifest.get("image_size"):
                    props["hull_image_size"] = str(manifest["image_size"])
                metadata = {
                    "status": "active",
                    "disk_format": "raw",
                    # A zone's image is a compressed archive of its root; a KVM one a disk.
                    "container_format": "bare" if brand in HVM else "compressed",
                    "properties": props,
                }
                self._image_api.update(context, image_id, metadata, f)
        finally:
            try:
                self._call("DELETE", "/images/%s/file" % image_id)
            except hull_client.HullError as e:
                LOG.warning("the node kept image %s's file: %s", image_id, e, instance=instance)
        LOG.info("snapshot %s uploaded to Glance", image_id, instance=instance)


def _scratch_dir():
    """Where an image passing between Glance and the node is held: Nova's instances_path
    (sized for disks), else the system's temporary directory."""
    return CONF.instances_path if os.path.isdir(CONF.instances_path or "") else None


def _image_name(name):
    """A Glance image's name as a hull image name (letters, digits, ' ._/-'; 1 to 512)."""
    cleaned = re.sub(r"[^A-Za-z0-9 ._/-]", "-", name or "")[:512].strip()
    return cleaned or "nova-image"
