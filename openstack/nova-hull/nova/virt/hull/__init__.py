"""Where Nova finds the hull driver: `compute_driver = hull.HullDriver`.

Nova loads a compute driver by a path under `nova.virt`; this module, installed into Nova's
own `nova/virt/` by the nova-hull package, only names the driver that lives in `nova_hull`.
"""

from nova_hull.driver import HullDriver

__all__ = ["HullDriver"]
