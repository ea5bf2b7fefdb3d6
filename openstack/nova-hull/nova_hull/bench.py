"""The Python side of bench/nova: HullDriver.spawn timed in this process, one spawn per
line asked on stdin, so the Rust side can interleave it with `vmadm create`.

    python -m nova_hull.bench API_SOCKET IMAGE_UUID

stdin: `spawn` (answers the milliseconds spawn took, to running) or `destroy` (the last
spawned instance; answers `ok`). Nova's configuration is its defaults, no database.
"""

import sys
import time
import uuid

from nova import context as nova_context
from nova import objects

import nova.conf
from nova.virt import fake

CONF = nova.conf.CONF


def main():
    sock, image = sys.argv[1], sys.argv[2]
    objects.register_all()
    CONF([], project="nova", default_config_files=[])
    from nova_hull import driver as hull_driver

    CONF.set_override("api_socket", sock, group="hull")
    CONF.set_override("job_timeout", 120, group="hull")
    driver = hull_driver.HullDriver(fake.FakeVirtAPI())
    driver.init_host("bench")
    ctxt = nova_context.get_admin_context()
    flavor = objects.Flavor(name="bench", flavorid="bench", memory_mb=64, vcpus=1, root_gb=0, ephemeral_gb=0,
                            swap=0, extra_specs={"hull:brand": "joyent-minimal"})
    image_meta = objects.ImageMeta.from_dict({"id": image, "properties": {}})
    last, n = None, 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "spawn":
            n += 1
            instance = objects.Instance(ctxt, uuid=str(uuid.uuid4()), id=n, image_ref=image, flavor=flavor,
                                        hostname="bench%d" % n, metadata={}, user_data=None, key_data=None)
            t = time.perf_counter()
            driver.spawn(ctxt, instance, image_meta, [], None, {}, network_info=None)
            took = (time.perf_counter() - t) * 1000
            last = instance
            print("%.3f" % took, flush=True)
        elif cmd == "destroy" and last is not None:
            driver.destroy(ctxt, last, None)
            last = None
            print("ok", flush=True)
        else:
            print("error: %r" % cmd, flush=True)


if __name__ == "__main__":
    main()
