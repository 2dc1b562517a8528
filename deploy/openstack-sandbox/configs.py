"""Configuration files of the sandbox's services, rendered from the state directory's paths."""

from __future__ import annotations

import shutil
from pathlib import Path

RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"
KEYSTONE = "http://127.0.0.1:5000"
SERVICE_PASSWORD = "sandbox-service"
ADMIN_PASSWORD = "sandbox-admin"

DATABASES = (
    "os_keystone",
    "os_glance",
    "os_placement",
    "os_nova_api",
    "os_nova_cell0",
    "os_nova",
    "os_neutron",
)


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
    db = f"{pg.rstrip('/')}/"
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
connection = {db}os_keystone

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
connection = {db}os_glance

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
connection = {db}os_placement

[api]
auth_strategy = keystone
{_authtoken("placement")}""",
        ),
        "nova": (
            etc / "nova/nova.conf",
            f"""[DEFAULT]
debug = false
use_stderr = true
compute_driver = visa_sandbox.SandboxDriver
transport_url = {RABBIT}
my_ip = 127.0.0.1
host = visa-sandbox-compute
state_path = {data / "nova"}
osapi_compute_listen = 127.0.0.1
# Images are never downloaded by the fake driver; keep the periodic noise low.
heal_instance_info_cache_interval = -1
sync_power_state_interval = 60
max_concurrent_builds = 20

[wsgi]
api_paste_config = {etc / "nova/api-paste.ini"}

[api]
max_limit = 1000

[database]
connection = {db}os_nova

[api_database]
connection = {db}os_nova_api

[conductor]
workers = 1

[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10

[vnc]
enabled = false

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
connection = {db}os_neutron

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
