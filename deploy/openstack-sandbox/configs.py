"""Configuration files of the sandbox's services, rendered from the state directory's paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
# Nova's compute host (and node) name; its node identity lives in state/data/nova/compute_id.
COMPUTE_HOST = "visa-sandbox-compute"
KEYSTONE = "http://127.0.0.1:5000"
SERVICE_PASSWORD = "sandbox-service"
ADMIN_PASSWORD = "sandbox-admin"
# The real sandbox (sandbox.py --real) sets its own prefix: both can share one PostgreSQL.
DB_PREFIX = os.environ.get("VISA_OS_SANDBOX_DB_PREFIX", "os_")
REAL = os.environ.get("VISA_OS_SANDBOX_REAL") == "1"
# The real sandbox's VM network: a bridge inside its namespace, the VMs' gateway.
BRIDGE, BRIDGE_ADDRESS, VM_CIDR = "br-visa", "10.213.0.1", "10.213.0.0/24"


def db(name: str) -> str:
    return f"{DB_PREFIX}{name}"


DATABASES = tuple(db(n) for n in ("keystone", "glance", "placement", "nova_api", "nova_cell0", "nova", "neutron"))


def db_url(pg: str, name: str) -> str:
    """``pg`` with database ``name``; a query (``?host=/var/run/postgresql``) stays at the end."""
    base, sep, query = pg.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def _nova_real(data: Path) -> str:
    """Nova's libvirt driver in plain emulation (no usable KVM here), config drive, no VIF events."""
    return """
[libvirt]
virt_type = qemu
cpu_mode = none
connection_uri = qemu:///system
"""


def _authtoken(user: str) -> str:
    return f"""
[keystone_authtoken]
www_authenticate_uri = {KEYSTONE}
auth_url = {KEYSTONE}
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
username = {user}
password = {SERVICE_PASSWORD}
"""


def _credentials(section: str, user: str) -> str:
    return f"""
[{section}]
auth_url = {KEYSTONE}/v3
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
username = {user}
password = {SERVICE_PASSWORD}
region_name = RegionOne
"""


# The facility's data tree the real sandbox exports over NFS (nfs-ganesha, user space):
# proposal -> (beamline, owner uid). Raw data is the owner's, read-only for others of the
# proposal; the processed area is writable by the owner. The VMs see it at
# ``<BRIDGE_ADDRESS>:/facility/{visitor,processed}/<proposal>/<beamline>``.
FACILITY_PROPOSALS = {"ev280": ("id21", 21001), "ma9012": ("id16a", 21002)}


def _ganesha(data: Path) -> str:
    return f"""NFS_CORE_PARAM {{
    Protocols = 4;
    Bind_addr = {BRIDGE_ADDRESS};
    NFS_Port = 2049;
    Enable_RQUOTA = false;
    Enable_NLM = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {data / "facility"};
    Pseudo = /facility;
    Access_Type = RW;
    # The VMs mount as root: squashed, it could not look up a proposal directory (0750).
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
"""


def facility_tree(data: Path) -> None:
    """The exported tree: one directory per proposal and beamline, owned by its proposal's uid."""
    import os as _os

    root = data / "facility"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for kind in ("visitor", "processed"):
        (root / kind).mkdir(exist_ok=True)
        (root / kind).chmod(0o755)
    for proposal, (beamline, uid) in FACILITY_PROPOSALS.items():
        raw = root / "visitor" / proposal / beamline
        processed = root / "processed" / proposal / beamline
        for path in (raw, processed):
            path.mkdir(parents=True, exist_ok=True)
        scan = raw / "scan_0001.h5"
        if not scan.exists():
            scan.write_text(f"raw data of {proposal}\n")
        for path in (raw.parent, raw, scan, processed.parent, processed):
            _os.chown(path, uid, uid)
        for path, mode in ((raw.parent, 0o750), (raw, 0o750), (scan, 0o640), (processed.parent, 0o750), (processed, 0o770)):
            path.chmod(mode)


def _privsep(venv: Path, etc: Path) -> str:
    """The services run as root already: privsep's helpers start directly, not through sudo."""
    sections = ("nova_sys_admin", "vif_plug_linux_bridge_privileged", "vif_plug_ovs_privileged")
    return "".join(
        f"\n[{s}]\nhelper_command = {venv / 'bin/privsep-helper'} --config-file {etc / 'nova/nova.conf'}\n"
        for s in sections
    )


def render(state: Path, venv: Path, pg: str) -> dict[str, Path]:
    """Write every service's files under ``state/etc``; return the main file of each."""
    etc, data = state / "etc", state / "data"
    for sub in ("keystone", "glance", "placement", "nova", "neutron"):
        (etc / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("fernet-keys", "credential-keys", "images", "staging", "tasks", "nova", "neutron", "locks"):
        (data / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    # The paste pipelines ship with the packages.
    shutil.copy(venv / "etc/nova/api-paste.ini", etc / "nova/api-paste.ini")
    shutil.copy(venv / "etc/neutron/api-paste.ini", etc / "neutron/api-paste.ini")
    shutil.copy(venv / "etc/glance/glance-api-paste.ini", etc / "glance/glance-api-paste.ini")
    real_defaults = real_sections = ""
    if REAL:
        (data / "nova/instances").mkdir(parents=True, exist_ok=True)
        # libvirt's qemu runs as its own user: it must reach the instances' files.
        for path in (data, data / "nova", data / "nova/instances"):
            path.chmod(0o711)
        real_defaults = f"""instances_path = {data / "nova/instances"}
force_config_drive = true
mkisofs_cmd = genisoimage
# No L2 agent sends "network-vif-plugged": do not wait for it.
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
"""
        real_sections = _nova_real(data) + _privsep(venv, etc)
        (etc / "libvirt").mkdir(parents=True, exist_ok=True)
        (etc / "libvirt/libvirtd.conf").write_text(
            'unix_sock_group = "root"\nunix_sock_rw_perms = "0770"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
            'log_outputs = "3:stderr"\n'
        )
        (etc / "libvirt/virtlogd.conf").write_text('log_outputs = "3:stderr"\n')
        (etc / "ganesha").mkdir(parents=True, exist_ok=True)
        (etc / "ganesha/ganesha.conf").write_text(_ganesha(data))
        for sub in ("ganesha", "ganesha/recovery"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        facility_tree(data)
    common = f"""
[DEFAULT]
debug = false
use_stderr = true

[oslo_concurrency]
lock_path = {data / "locks"}
"""
    files = {
        "keystone": (
            etc / "keystone/keystone.conf",
            f"""{common}
[database]
connection = {db_url(pg, db('keystone'))}

[token]
provider = fernet

[fernet_tokens]
key_repository = {data / "fernet-keys"}

[credential]
key_repository = {data / "credential-keys"}
""",
        ),
        "glance": (
            etc / "glance/glance-api.conf",
            f"""[DEFAULT]
debug = false
use_stderr = true
bind_host = 127.0.0.1
bind_port = 9292
enabled_backends = fs:file

[database]
connection = {db_url(pg, db('glance'))}

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {data / "images"}

[os_glance_staging_store]
filesystem_store_datadir = {data / "staging"}

[os_glance_tasks_store]
filesystem_store_datadir = {data / "tasks"}

[paste_deploy]
flavor = keystone
config_file = {etc / "glance/glance-api-paste.ini"}

[oslo_concurrency]
lock_path = {data / "locks"}
{_authtoken("glance")}""",
        ),
        "placement": (
            etc / "placement/placement.conf",
            f"""{common}
[placement_database]
connection = {db_url(pg, db('placement'))}

[api]
auth_strategy = keystone
{_authtoken("placement")}""",
        ),
        "nova": (
            etc / "nova/nova.conf",
            f"""[DEFAULT]
debug = false
use_stderr = true
compute_driver = {"libvirt.LibvirtDriver" if REAL else "visa_sandbox.SandboxDriver"}
transport_url = {RABBIT}
my_ip = 127.0.0.1
host = {COMPUTE_HOST}
state_path = {data / "nova"}
osapi_compute_listen = 127.0.0.1
# Images are never downloaded by the fake driver; keep the periodic noise low.
heal_instance_info_cache_interval = -1
sync_power_state_interval = 60
max_concurrent_builds = 20
{real_defaults}
[wsgi]
api_paste_config = {etc / "nova/api-paste.ini"}

[api]
max_limit = 1000

[database]
connection = {db_url(pg, db('nova'))}

[api_database]
connection = {db_url(pg, db('nova_api'))}

[conductor]
workers = 1

[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10

[vnc]
enabled = false
{real_sections}
[oslo_messaging_notifications]
driver = noop

[oslo_concurrency]
lock_path = {data / "locks"}

[service_user]
send_service_user_token = true
auth_url = {KEYSTONE}/v3
auth_type = password
user_domain_name = Default
project_domain_name = Default
project_name = service
username = nova
password = {SERVICE_PASSWORD}
{_authtoken("nova")}{_credentials("placement", "placement")}{_credentials("neutron", "neutron")}
[glance]
region_name = RegionOne
""",
        ),
        "neutron": (
            etc / "neutron/neutron.conf",
            f"""[DEFAULT]
debug = false
use_stderr = true
bind_host = 127.0.0.1
bind_port = 9696
core_plugin = ml2
service_plugins = router,port_forwarding
auth_strategy = keystone
transport_url = {RABBIT}
state_path = {data / "neutron"}
api_paste_config = {etc / "neutron/api-paste.ini"}
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
api_workers = 1
rpc_workers = 0

[database]
connection = {db_url(pg, db('neutron'))}

[oslo_concurrency]
lock_path = {data / "locks"}
{_authtoken("neutron")}""",
        ),
        "ml2": (
            etc / "neutron/ml2_conf.ini",
            """[ml2]
type_drivers = flat,local
tenant_network_types = local
extension_drivers = port_security
mechanism_drivers = visa_bind_all

[ml2_type_flat]
flat_networks = public
""",
        ),
    }
    for path, text in files.values():
        path.write_text(text)
    return {name: path for name, (path, _) in files.items()}
