"""hull's own driver tests on a real node (made by run-tests): what an instance's metadata
becomes inside the zone, power states, console, and Nova's exceptions for hull's refusals.
"""

import base64
import io
import os
import subprocess
import threading

from nova import exception
from nova import objects
from nova import test
from nova.compute import power_state
from nova.compute import task_states
from nova.tests import fixtures as nova_fixtures
from nova.tests.unit import utils as test_utils
from nova.virt import fake

from nova_hull import client as hull_client
from nova_hull import driver as hull_driver


def zlogin(uuid, *cmd):
    """Runs a command in the zone, through hull's own zlogin on the test's node."""
    env = dict(os.environ)
    argv = ["nsenter", "--net=/run/netns/" + os.environ["HULL_NETNS"], os.environ["HULL"], "zlogin", uuid, *cmd]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


class HullSpawnTestCase(test.TestCase):
    def setUp(self):
        sock = os.environ.get("HULL_API_SOCKET")
        if not sock:
            self.skipTest("HULL_API_SOCKET is not set: run openstack/nova-hull/run-tests")
        super().setUp()
        self.flags(api_socket=sock, default_nic_tag="admin", job_timeout=120, group="hull")
        self.driver = hull_driver.HullDriver(fake.FakeVirtAPI())
        self.ctxt = test_utils.get_test_admin_context()
        self.api = hull_client.Client(socket_path=sock)
        # Glance, as a compute service has it (Nova's fixture).
        self.glance = self._glance()
        self.addCleanup(self._remove_vms)

    def _remove_vms(self):
        for vm in self.api.call("GET", "/vms"):
            try:
                self.api.change("DELETE", "/vms/%s" % vm["uuid"], timeout=120)
            except hull_client.HullError:
                pass

    def _instance(self, extra_specs=None, memory_mb=256):
        flavor = test_utils.get_test_flavor(self.ctxt, {"flavorid": "hull-%d" % memory_mb, "name": "hull.%d" % memory_mb,
                                                         "memory_mb": memory_mb, "vcpus": 1, "root_gb": 1})
        instance = test_utils.get_test_instance(self.ctxt, flavor=flavor, obj=True)
        instance.flavor = flavor
        instance.flavor.extra_specs = extra_specs or {}
        instance.hostname = "nova-zone"
        return instance

    def _spawn(self, instance, **kw):
        image_meta = objects.ImageMeta.from_dict({"id": instance.image_ref, "properties": {}})
        self.driver.spawn(self.ctxt, instance, image_meta, [], None, {}, network_info=kw.get("network_info"))

    def test_user_data_and_metadata_reach_the_zone_s_mdata(self):
        instance = self._instance()
        instance.metadata = {"role": "web", "tier": "front"}
        instance.user_data = base64.b64encode(b"#cloud-config\nhostname: from-nova\n").decode()
        instance.key_data = "ssh-ed25519 AAAAC3NzaNova test@nova"
        self._spawn(instance)
        self.assertEqual(power_state.RUNNING, self.driver.get_info(instance).state)
        get = lambda key: zlogin(instance.uuid, "/.zonecontrol/bin/mdata-get", key)
        self.assertEqual("web", get("role").stdout.strip())
        self.assertEqual("front", get("tier").stdout.strip())
        self.assertEqual("#cloud-config\nhostname: from-nova\n", get("user-data").stdout)
        self.assertEqual("ssh-ed25519 AAAAC3NzaNova test@nova", get("root_authorized_keys").stdout.strip())
        self.assertEqual(instance.uuid, get("sdc:uuid").stdout.strip())
        # The instance's name is Nova's record, not the tenant's to read.
        self.assertNotEqual(0, get("nova:instance_name").returncode)
        self.assertIn(instance.name, self.driver.list_instances())
        self.assertIn(instance.uuid, self.driver.list_instance_uuids())

    def test_power_states_and_the_console(self):
        instance = self._instance()
        self._spawn(instance)
        zlogin(instance.uuid, "sh", "-c", "echo NOVA-HULL-CONSOLE > /dev/console")
        self.assertIn("NOVA-HULL-CONSOLE", self.driver.get_console_output(self.ctxt, instance))
        self.driver.power_off(instance)
        self.assertEqual(power_state.SHUTDOWN, self.driver.get_info(instance).state)
        self.driver.power_off(instance)  # again: already off, nothing to do
        self.driver.power_on(self.ctxt, instance, None)
        self.assertEqual(power_state.RUNNING, self.driver.get_info(instance).state)
        self.driver.reboot(self.ctxt, instance, None, "HARD")
        self.assertEqual(power_state.RUNNING, self.driver.get_info(instance).state)
        self.driver.destroy(self.ctxt, instance, None)
        self.assertRaises(exception.InstanceNotFound, self.driver.get_info, instance)
        self.driver.destroy(self.ctxt, instance, None)  # gone already: fine
        self.driver.cleanup(self.ctxt, instance, None)  # nothing left: fine
        kept = self._instance()
        self._spawn(kept)
        self.driver.cleanup(self.ctxt, kept, None, destroy_disks=False)
        self.assertTrue(self.driver.instance_exists(kept), "cleanup without destroy_disks kept the VM")
        self.driver.cleanup(self.ctxt, kept, None)
        self.assertFalse(self.driver.instance_exists(kept))

    def test_hull_s_refusals_are_nova_s_exceptions(self):
        bad_brand = self._instance({"hull:brand": "solaris8"})
        self.assertRaises(exception.InstanceDeployFailure, self._spawn, bad_brand)
        # A flavor hull refuses for this image: an lx zone from a zone-dataset image.
        lx = self._instance({"hull:brand": "lx"})
        e = self.assertRaises(exception.InstanceDeployFailure, self._spawn, lx)
        self.assertIn("zone-dataset", str(e))
        missing = self._instance()
        missing.image_ref = "0b5a6f00-0000-4000-8000-00000000dead"
        self.assertRaises(exception.ImageNotFound, self._spawn, missing)
        twice = self._instance()
        self._spawn(twice)
        self.assertRaises(exception.InstanceExists, self._spawn, twice)
        self.assertEqual([twice.uuid], self.driver.list_instance_uuids(), "nothing else was made")

    def _glance(self):
        """Nova's Glance fixture, keeping what an update uploads (the fixture drops it)."""
        fx = self.useFixture(nova_fixtures.GlanceFixture(self))
        update = fx.update

        def keep(context, image_id, metadata, data=None, purge_props=False):
            if data is not None:
                fx._imagedata[image_id] = data.read()
            return update(context, image_id, metadata, purge_props=purge_props)

        fx.update = keep
        return fx

    def test_a_snapshot_goes_to_glance_and_an_instance_boots_from_it_on_a_node_without_it(self):
        glance = self.glance
        source = self._instance()
        self._spawn(source)
        self.assertEqual(0, zlogin(source.uuid, "sh", "-c", "echo written-before-the-snapshot > /marker").returncode)
        image = glance.create(self.ctxt, {"name": "snap of nova/zone #1"})
        states = []
        self.driver.snapshot(self.ctxt, source, image["id"], lambda **kw: states.append(kw["task_state"]))
        self.assertEqual([task_states.IMAGE_PENDING_UPLOAD, task_states.IMAGE_UPLOADING], states)
        # Stopped for the image, running again after.
        self.assertEqual(power_state.RUNNING, self.driver.get_info(source).state)
        meta = glance.show(self.ctxt, image["id"])
        self.assertEqual(("raw", "compressed"), (meta["disk_format"], meta["container_format"]))
        self.assertEqual("zone-dataset", meta["properties"]["hull_image_type"])
        self.assertEqual("joyent", meta["properties"]["hull_brand"])
        data = glance._imagedata[image["id"]]
        self.assertEqual(b"\x1f\x8b", data[:2], "a gzip archive")
        # The node kept no copy and installed nothing.
        e = self.assertRaises(hull_client.HullError, self.api.call, "GET", "/images/%s/file" % image["id"])
        self.assertEqual("ImageNotFound", e.code)
        # A new instance of it: installed from Glance's data, holding what the zone wrote.
        child = self._instance()
        child.image_ref = image["id"]
        self._spawn(child)
        self.assertEqual("written-before-the-snapshot", zlogin(child.uuid, "cat", "/marker").stdout.strip())
        installed = self.api.call("GET", "/images/%s" % image["id"])
        self.assertEqual("snap of nova/zone -1", installed["name"])

    def test_glance_images_hull_cannot_use_are_refused_and_leave_nothing(self):
        glance = self.glance

        before = self.api.call("GET", "/images")
        qcow = glance.create(self.ctxt, {"name": "q", "disk_format": "qcow2", "container_format": "bare"},
                             data=io.BytesIO(b"QFI\xfb" + b"\0" * 1020))
        e = self.assertRaises(exception.ImageUnacceptable, self.driver._ensure_image, self.ctxt, qcow["id"])
        self.assertIn("qcow2", str(e))
        empty = glance.create(self.ctxt, {"name": "e", "disk_format": "raw", "container_format": "bare"})
        self.assertRaises(exception.ImageUnacceptable, self.driver._ensure_image, self.ctxt, empty["id"])
        # A zone image whose bytes are not what its properties say: the node refuses it.
        lie = glance.create(self.ctxt, {"name": "lie", "disk_format": "raw", "container_format": "compressed",
                                        "properties": {"hull_image_type": "zone-dataset", "hull_compression": "gzip"}},
                            data=io.BytesIO(b"not gzip at all" * 100))
        self.assertRaises(exception.ImageUnacceptable, self.driver._ensure_image, self.ctxt, lie["id"])
        # Properties a tenant made up: refused by the driver or by the node, never a traceback.
        for props in ({"hull_image_type": "zvol", "hull_image_size": "lots"},
                      {"hull_image_type": "zone-dataset", "hull_compression": "xz9"},
                      {"hull_image_type": "no-such-type"},
                      {"hull_image_type": "zvol", "hull_version": "1.0; rm -rf /", "hull_brand": "../../etc"}):
            made = glance.create(self.ctxt, {"name": "odd", "disk_format": "raw", "container_format": "bare",
                                             "properties": props}, data=io.BytesIO(b"\0" * 4096))
            self.assertRaises(exception.ImageUnacceptable, self.driver._ensure_image, self.ctxt, made["id"])
        self.assertEqual(before, self.api.call("GET", "/images"))
        uploads = os.path.join(os.environ["HULL_ROOT"], "var/hull/api/uploads")
        self.assertEqual([], os.listdir(uploads) if os.path.isdir(uploads) else [], "an upload was left")
        # A plain raw disk from elsewhere becomes a zvol image (for KVM flavors).
        disk = glance.create(self.ctxt, {"name": "disk", "disk_format": "raw", "container_format": "bare"},
                             data=io.BytesIO(b"\x55" * (3 << 20)))
        # Two spawns of it at once: both go on, the node installs it once.
        errors = []

        def ensure():
            try:
                self.driver._ensure_image(self.ctxt, disk["id"])
            except Exception as e:  # noqa: BLE001 - any failure fails the test below
                errors.append(e)

        threads = [threading.Thread(target=ensure) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual([], errors)
        got = self.api.call("GET", "/images/%s" % disk["id"])
        self.assertEqual(("zvol", 3), (got["type"], got["image_size"]))
        self.assertEqual(1, sum(1 for i in self.api.call("GET", "/images") if i["uuid"] == disk["id"]))
        self.api.change("DELETE", "/images/%s" % disk["id"])
