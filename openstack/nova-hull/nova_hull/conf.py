"""The `[hull]` section of nova.conf."""

from oslo_config import cfg

hull_group = cfg.OptGroup("hull", title="hull compute driver", help="The hull node this nova-compute drives.")

hull_opts = [
    cfg.StrOpt(
        "api_socket",
        default="/var/run/hull/api.sock",
        help="The node API's unix socket (nova-compute runs on the node, as root or in the "
        "API's group). Ignored when api_url is set.",
    ),
    cfg.StrOpt("api_url", help="The node API over TLS, https://NODE:PORT (hull api serve --tls)."),
    cfg.StrOpt("ca_file", help="The node's CA certificate (hull api ca), for api_url."),
    cfg.StrOpt("cert_file", help="This client's certificate (hull api trust add NAME), for api_url."),
    cfg.StrOpt("key_file", help="This client's key, for api_url."),
    cfg.IntOpt("api_timeout", default=60, min=1, help="Seconds one API request may take."),
    cfg.IntOpt("job_timeout", default=600, min=1, help="Seconds to wait for a VM job (create, stop, delete)."),
    cfg.StrOpt(
        "default_brand",
        default="joyent",
        choices=["joyent", "joyent-minimal", "lx", "kvm", "bhyve"],
        help="The brand of an instance whose flavor has no hull:brand extra spec.",
    ),
    cfg.StrOpt("lx_kernel_version", default="6.1", help="kernel_version for lx-branded zones."),
    cfg.StrOpt(
        "default_nic_tag",
        default="admin",
        help="The nic tag a port goes on when nic_tag_mappings does not name its network.",
    ),
    cfg.DictOpt(
        "nic_tag_mappings",
        default={},
        help="Neutron physical network (or bridge) name to hull nic tag, e.g. physnet1:external.",
    ),
    cfg.IntOpt(
        "console_bytes", default=65536, min=1, max=1048576, help="How much of the console get_console_output returns."
    ),
]


def register_opts(conf):
    conf.register_group(hull_group)
    conf.register_opts(hull_opts, group=hull_group)


def list_opts():
    return {hull_group: hull_opts}
