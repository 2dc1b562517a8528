"""Steps of the sandbox set-up that talk to PostgreSQL or the APIs; run by the sandbox's venv.

Every step is idempotent: it finds what exists and creates only what is missing.

    python bootstrap.py databases PG_URL
    python bootstrap.py neutron-tables PG_URL
    python bootstrap.py identity
    python bootstrap.py wait-compute
    python bootstrap.py resources
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datetime import UTC

from configs import (  # noqa: E402
    ADMIN_PASSWORD,
    BRIDGE_ADDRESS,
    DATABASES,
    KEYSTONE,
    REAL,
    SERVICE_PASSWORD,
    VM_CIDR,
    db,
    db_url,
)

VISA_PROJECT, VISA_USER, VISA_PASSWORD = "visa", "visa", "visa-sandbox"
# A project where visa may create nothing: its quota errors are tested for real.
FULL_PROJECT = "visa-full"
# A flavour no host can take (it requires a trait nobody has): "No valid host" for real.
NOHOST_FLAVOUR, NOHOST_TRAIT = "visa.nohost", "CUSTOM_VISA_SANDBOX_NOWHERE"
NETWORK, SUBNET_CIDR = "visa-net", "127.100.0.0/16"
IMAGE = "visa-sandbox-image"
# What the GPU flavours ask Placement for, per server (the fake host offers four:
# sandbox_plugins/compute.py); flavours/*.yaml say one NVIDIA A40 each.
GPU_SPECS = {"esrf.gpu.a40": {"resources:CUSTOM_GPU_A40": "1"}, "esrf.gpu.a40.xlarge": {"resources:CUSTOM_GPU_A40": "1"}}
# A read-only Placement account for visa's capacity view: Placement lets only admin or
# service accounts read providers (credentials: ``placement``).
CAPACITY_USER, CAPACITY_PASSWORD = "visa-capacity", "visa-capacity-sandbox"
# Name -> (vcpus, ram MB, disk GB); the names match flavours/*.yaml. Disk is not zero:
# Nova refuses image-backed servers on zero-disk flavours to non-admins.
FLAVOURS = {
    "esrf.medium": (4, 4096, 20),
    "esrf.large": (8, 16384, 20),
    "esrf.gpu.a40": (16, 32768, 20),
    "esrf.gpu.a40.xlarge": (32, 131072, 20),
    "visa.tiny": (1, 256, 1),
    # The real sandbox's VMs: one emulated core is all two shared cores can give.
    "visa.vm": (1, 1024, 6),
}
ENDPOINTS = {
    "keystone": ("identity", f"{KEYSTONE}/v3/"),
    "nova": ("compute", "http://127.0.0.1:8774/v2.1"),
    "glance": ("image", "http://127.0.0.1:9292"),
    "placement": ("placement", "http://127.0.0.1:8778"),
    "neutron": ("network", "http://127.0.0.1:9696"),
}


def log(message: str) -> None:
    print(f"[sandbox] {message}", file=sys.stderr, flush=True)


def databases(pg_url: str, fresh: bool = False) -> None:
    """The services' databases; ``fresh`` drops those a sandbox elsewhere left first.

    The databases only make sense with the state directory that filled them (keystone's keys,
    nova's compute node identity, glance's image files): a new state directory starts anew.
    """
    import psycopg2

    conn = psycopg2.connect(db_url(pg_url, "postgres").replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        have = {row[0] for row in cur.fetchall()}
        if fresh:
            for name in sorted(have & set(DATABASES)):
                cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                log(f"dropped database {name}, left by an earlier sandbox")
            have -= set(DATABASES)
        for name in DATABASES:
            if name not in have:
                cur.execute(f'CREATE DATABASE "{name}"')
                log(f"created database {name}")
    conn.close()


def neutron_tables(pg_url: str) -> None:
    """Neutron's migrations are MySQL-only: build its tables from the models instead.

    ``neutron-db-manage stamp heads`` afterwards records them as migrated.
    """
    import sqlalchemy
    from neutron.db.migration.models import head
    from sqlalchemy import orm

    orm.configure_mappers()
    engine = sqlalchemy.create_engine(db_url(pg_url, db("neutron")))
    head.get_metadata().create_all(engine)
    engine.dispose()
    log("neutron tables created")


def admin():  # type: ignore[no-untyped-def]
    import openstack

    return openstack.connect(
        auth_url=f"{KEYSTONE}/v3",
        username="admin",
        password=ADMIN_PASSWORD,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )


def identity() -> None:
    conn = admin()
    idn = conn.identity
    roles = {r.name: r for r in idn.roles()}
    for name in ("service", "member"):
        if name not in roles:
            roles[name] = idn.create_role(name=name)
    service_project = idn.find_project("service") or idn.create_project(name="service", domain_id="default")
    for user in ("nova", "neutron", "glance", "placement"):
        account = idn.find_user(user) or idn.create_user(
            name=user, password=SERVICE_PASSWORD, domain_id="default"
        )
        for role in ("admin", "service"):
            idn.assign_project_role_to_user(service_project, account, roles[role])
    existing = {s.type: s for s in idn.services()}
    for name, (kind, url) in ENDPOINTS.items():
        service = existing.get(kind) or idn.create_service(name=name, type=kind)
        have = {e.interface for e in idn.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            if interface not in have:
                idn.create_endpoint(
                    service_id=service.id, interface=interface, url=url, region_id="RegionOne"
                )
    project = idn.find_project(VISA_PROJECT) or idn.create_project(name=VISA_PROJECT, domain_id="default")
    user = idn.find_user(VISA_USER) or idn.create_user(
        name=VISA_USER, password=VISA_PASSWORD, domain_id="default", default_project_id=project.id
    )
    idn.assign_project_role_to_user(project, user, roles["member"])
    full = idn.find_project(FULL_PROJECT) or idn.create_project(name=FULL_PROJECT, domain_id="default")
    idn.assign_project_role_to_user(full, user, roles["member"])
    capacity = idn.find_user(CAPACITY_USER) or idn.create_user(
        name=CAPACITY_USER, password=CAPACITY_PASSWORD, domain_id="default", default_project_id=service_project.id
    )
    idn.assign_project_role_to_user(service_project, capacity, roles["service"])
    log("identity ready")


def node_identity(pg_url: str, state_path: str, host: str) -> None:
    """Nova's node identity file from the compute node already recorded, when the file is gone
    (a state directory from before the driver kept it): nova-compute refuses to start without it."""
    import os

    import psycopg2

    path = os.path.join(state_path, "compute_id")
    if os.path.exists(path):
        return
    dsn = db_url(pg_url, db("nova")).replace("postgresql+psycopg2://", "postgresql://")
    try:
        conn = psycopg2.connect(dsn)
    except psycopg2.OperationalError:
        return  # no database yet: the first start makes both
    with conn, conn.cursor() as cur:
        cur.execute("SELECT uuid FROM compute_nodes WHERE host = %s AND deleted = 0 ORDER BY id DESC", (host,))
        row = cur.fetchone()
    conn.close()
    if row is not None:
        os.makedirs(state_path, exist_ok=True)
        with open(path, "x") as fh:
            fh.write(row[0])
        log(f"node identity {row[0]} restored from nova's database")


def wait_compute(timeout: float = 180, fresh: bool = False) -> None:
    """Until nova-compute is up and has reported to Placement; ``fresh``: until it reports
    after this moment (after a restart, the service still looks up on its last report)."""
    from datetime import datetime

    conn = admin()
    since = datetime.now(UTC)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            up = [s for s in conn.compute.services() if s.binary == "nova-compute" and s.state == "up"]
            if fresh:
                up = [s for s in up if s.updated_at and
                      datetime.fromisoformat(s.updated_at.rstrip("Z")).replace(tzinfo=UTC) > since]
            if up and list(conn.placement.resource_providers()):
                log("nova-compute is up and reported to placement")
                return
        except Exception as exc:  # the APIs may still be starting
            log(f"waiting for nova-compute ({type(exc).__name__})")
        time.sleep(2)
    raise SystemExit("nova-compute did not come up; see state/log/nova-compute.log")


def quota(conn, project_id: str, **limits: int) -> None:  # type: ignore[no-untyped-def]
    # Raw PUT: the SDK's cloud layer drops zero values.
    response = conn.compute.put(f"/os-quota-sets/{project_id}", json={"quota_set": limits})
    response.raise_for_status()


def resources() -> None:
    conn = admin()
    project = conn.identity.find_project(VISA_PROJECT)
    if conn.image.find_image(IMAGE) is None:
        conn.image.create_image(
            name=IMAGE,
            data=b"visa sandbox image\n" * 64,
            disk_format="raw",
            container_format="bare",
            visibility="public",
            allow_duplicates=True,
        )
        log(f"image {IMAGE} registered")
    for name, (vcpus, ram, disk) in FLAVOURS.items():
        flavour = conn.compute.find_flavor(name, get_extra_specs=True)
        if flavour is None:
            flavour = conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)
            log(f"flavour {name} created")
        wanted = GPU_SPECS.get(name, {})
        if wanted and any((flavour.extra_specs or {}).get(k) != v for k, v in wanted.items()):
            conn.compute.create_flavor_extra_specs(flavour, wanted)
            log(f"flavour {name}: {wanted}")
    nohost = conn.compute.find_flavor(NOHOST_FLAVOUR)
    if nohost is None:
        nohost = conn.compute.create_flavor(name=NOHOST_FLAVOUR, vcpus=1, ram=256, disk=1, is_public=True)
        conn.compute.create_flavor_extra_specs(nohost, {f"trait:{NOHOST_TRAIT}": "required"})
        log(f"flavour {NOHOST_FLAVOUR} created")
    if REAL:
        real_image(conn)
    network = conn.network.find_network(NETWORK, project_id=project.id)
    if network is None:
        network = conn.network.create_network(name=NETWORK, project_id=project.id)
    if not list(conn.network.subnets(network_id=network.id)):
        # Fast sandbox: loopback addresses, nothing a test probes can leave the machine. Real
        # sandbox: the bridge of its own namespace; the config drive gives each VM its address.
        cidr, gateway = (VM_CIDR, BRIDGE_ADDRESS) if REAL else (SUBNET_CIDR, None)
        conn.network.create_subnet(
            name=f"{NETWORK}-v4",
            network_id=network.id,
            project_id=project.id,
            ip_version=4,
            cidr=cidr,
            gateway_ip=gateway,
            enable_dhcp=False,
        )
        log(f"network {NETWORK} ({cidr}) created")
    # The project's default security group is created on first use.
    if not list(conn.network.security_groups(project_id=project.id, name="default")):
        conn.network.create_security_group(name="default", project_id=project.id)
    quota(conn, project.id, instances=-1, cores=-1, ram=-1)
    conn.set_network_quotas(
        project.id, port=-1, network=-1, subnet=-1, security_group=-1, security_group_rule=-1
    )
    quota(conn, conn.identity.find_project(FULL_PROJECT).id, instances=0)
    log("image, flavours, network and quotas ready")


def real_image(conn) -> None:  # type: ignore[no-untyped-def]
    """visa's own image (make image), with its kernel and initrd for a direct boot; replaced
    when the recipe changed. The manifest's path is in VISA_OS_SANDBOX_IMAGE."""
    import json
    import os

    manifest_path = Path(os.environ["VISA_OS_SANDBOX_IMAGE"])
    manifest = json.loads(manifest_path.read_text())
    name, digest = manifest["name"], manifest["recipe_hash"]
    for image in conn.image.images(name=name):
        if (image.properties or {}).get("visa_recipe_hash") == digest:
            return
        for part in ((image.properties or {}).get("kernel_id"), (image.properties or {}).get("ramdisk_id")):
            if part:
                conn.image.delete_image(part, ignore_missing=True)
        conn.image.delete_image(image, ignore_missing=True)
        log(f"image {name} of an older recipe removed")
    folder = manifest_path.parent

    def upload(image_name: str, path: Path, disk_format: str, container_format: str, **props: str):  # type: ignore[no-untyped-def]
        return conn.image.create_image(
            name=image_name,
            filename=str(path),
            disk_format=disk_format,
            container_format=container_format,
            visibility="public",
            allow_duplicates=True,
            validate_checksum=False,
            **props,
        )

    kernel = upload(f"{name}-kernel", folder / manifest["kernel"], "aki", "aki", visa_recipe_hash=digest)
    ramdisk = upload(f"{name}-initrd", folder / manifest["initrd"], "ari", "ari", visa_recipe_hash=digest)
    upload(
        name,
        folder / manifest["disk"],
        manifest["disk_format"],
        "bare",
        kernel_id=kernel.id,
        ramdisk_id=ramdisk.id,
        os_command_line=manifest["command_line"],
        hw_disk_bus="virtio",
        visa_recipe_hash=digest,
    )
    log(f"image {name} ({digest}) uploaded")


def main() -> None:
    step = sys.argv[1]
    if step == "databases":
        databases(sys.argv[2], fresh="--fresh" in sys.argv[3:])
    elif step == "neutron-tables":
        neutron_tables(sys.argv[2])
    elif step == "identity":
        identity()
    elif step == "node-identity":
        node_identity(sys.argv[2], sys.argv[3], sys.argv[4])
    elif step == "wait-compute":
        wait_compute(fresh="--fresh" in sys.argv[2:])
    elif step == "resources":
        resources()
    else:
        raise SystemExit(f"unknown step {step!r}")


if __name__ == "__main__":
    main()
