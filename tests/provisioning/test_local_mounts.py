"""The rendered data mounts applied by the local provider: readable where expected, not
writable where they must not be, and nothing of another user's experiment."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.clouds.accounts import recorded_account
from tests.provisioning.cloudinit import cloud_config_part
from tests.provisioning.factories import NOW, boot, make_experiment, make_image, make_instance, make_user
from visa.instances.models import InstanceState
from visa.instances.spec import server_spec
from visa.provisioning import instance_mounts
from visa.settings import ProvisioningSettings, Settings

local = pytest.importorskip(
    "visa.clouds.local", reason="visa/clouds/local/ (LocalProvider) is not in the tree yet"
)

if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
    pytest.skip("read-only bind mounts need root and util-linux unshare/nsenter", allow_module_level=True)


def test_rendered_mounts_on_the_local_provider(session, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]  # mount points are real host paths: keep runs apart
    sources = tmp_path / "srv"
    site = ProvisioningSettings(
        mount_type="bind",
        raw_mount_template=f"{sources}/raw/{{proposal}}/{{beamline}}",
        processed_mount_template=f"{sources}/processed/{{proposal}}/{{beamline}}",
    )
    owner = make_user(session, "alice")
    other = make_user(session, "mallory")
    mine = make_experiment(session, f"ev{tag}", "id21", members=[owner])
    theirs = make_experiment(session, f"ma{tag}", "id16a", members=[other])
    public = make_experiment(session, f"hc{tag}", "id11", public_at=NOW - timedelta(days=1))
    for exp in (mine, theirs, public):
        raw = sources / "raw" / exp.proposal.identifier / exp.instrument.name
        raw.mkdir(parents=True)
        (raw / "scan_0001.h5").write_text(f"frames of {exp.proposal.identifier}")
    # No processed area yet: the local cloud makes the owner's at the create, and gives it to them.
    # Open data reaches the provider the way the executor builds it: stored on the instance,
    # turned into ServerSpec.mounts by server_spec.
    instance = make_instance(
        session, owner, make_image(session, "desktop", []), [mine, theirs], uid=f"t{tag}",
        open_data_experiments=[public],
    )
    spec = server_spec(instance, Settings(data_dir=tmp_path / "data", provisioning=site), NOW)
    mounts = instance_mounts(boot(instance, [public]), site=site)
    assert spec.mounts == tuple(mounts)
    assert all(m.kind == "bind" for m in mounts)
    assert [m.read_only for m in mounts if m.target == f"/data/visitor/hc{tag}/id11"] == [True]
    # The provider applies exactly what the user-data would put in fstab.
    fstab = yaml.safe_load(cloud_config_part(spec.user_data))
    assert [(m[0], m[1], "ro" in m[3].split(",")) for m in fstab["mounts"]] == [
        (m.source, m.target, m.read_only) for m in mounts
    ]

    provider = local.LocalProvider("local", {"root_dir": str(tmp_path / "instances")})
    # The account the executor would have recorded for the owner before the create.
    spec = dataclasses.replace(spec, account=recorded_account(owner.username))
    try:
        provider.create(spec)
        deadline = time.monotonic() + 45
        while (server := provider.get(instance.uid)) is not None and server.state == InstanceState.BUILDING:
            assert time.monotonic() < deadline, "session did not start"
            time.sleep(0.1)
        assert server is not None and server.state == InstanceState.ACTIVE, server and server.fault
        if server.provider_state.get("mount_mode") != "sandbox":
            pytest.skip(f"no sandbox here: {server.provider_state.get('limitations')}")

        def run(*argv: str) -> tuple[int, str]:
            done = provider.exec_in_session(instance.uid, list(argv))
            return done.returncode, (done.stdout + done.stderr).decode()

        raw, processed = f"/data/visitor/ev{tag}/id21", f"/data/processed/ev{tag}/id21"
        assert run("cat", f"{raw}/scan_0001.h5") == (0, f"frames of ev{tag}")
        code, out = run("touch", f"{raw}/new")
        assert code != 0 and "Read-only file system" in out
        assert run("sh", "-c", f"echo result > {processed}/out.txt")[0] == 0
        assert (sources / "processed" / f"ev{tag}" / "id21" / "out.txt").read_text() == "result\n"

        opened = f"/data/visitor/hc{tag}/id11"
        assert run("cat", f"{opened}/scan_0001.h5") == (0, f"frames of hc{tag}")
        code, out = run("touch", f"{opened}/new")
        assert code != 0 and "Read-only file system" in out
        assert not Path(f"/data/processed/hc{tag}").exists()

        # The experiment alice is not a member of: neither its data nor a mount point.
        assert run("ls", f"/data/visitor/ma{tag}")[0] != 0
        assert run("ls", f"/data/processed/ma{tag}")[0] != 0
    finally:
        for server in provider.list_servers():
            provider.delete(server.id)
