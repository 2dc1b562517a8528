"""The RDP bridge's keyboard, command line and reasons, without a machine: the instance's layout
reaches FreeRDP (``/kbd:``) and the bridge's X server (XKB) from visa's own table, never as the
instance's free text; no password on the command line; FreeRDP's exit status becomes a fixed
text of visa's."""

from __future__ import annotations

from pathlib import Path

import pytest

from visa.gateway import rdp
from visa.provisioning import names

PROGS = rdp.Programs("/usr/bin/bwrap", "/usr/bin/Xtigervnc", "/usr/bin/xfreerdp", "/usr/bin/setpriv",
                     "/usr/bin/setxkbmap")  # fmt: skip


def test_every_layout_visa_offers_has_an_rdp_keyboard() -> None:
    assert set(rdp.RDP_KEYBOARDS) == set(names.KEYBOARD_NAMES)


@pytest.mark.parametrize(
    ("layout", "rdp_id", "xkb"),
    [
        ("en-us", 0x0409, ("us", "")),
        ("de-de", 0x0407, ("de", "")),
        ("fr-ch", 0x100C, ("ch", "fr")),
        ("de-ch", 0x0807, ("ch", "")),
        ("fr-ca", 0x1009, ("ca", "fr")),
        ("fr-fr-azerty", 0x040C, ("fr", "")),  # a variant of a layout of the table: the layout
        ("xx-yy", 0x0409, ("us", "")),  # not in the table: US English
        ('de-de"; reboot #', 0x0409, ("us", "")),
        ("", 0x0409, ("us", "")),
    ],
)
def test_an_instances_layout_maps_through_visas_table(layout: str, rdp_id: int, xkb: tuple[str, str]) -> None:
    kbd = rdp.keyboard(layout)
    assert (kbd.rdp_id, (kbd.xkb_layout, kbd.xkb_variant)) == (rdp_id, xkb)


def test_the_command_line_carries_the_layout_and_no_password(tmp_path: Path) -> None:
    password = "Zq8sW3cretVnc-token_4242"
    argv = rdp.bridge_argv(PROGS, tmp_path, 1234, 1234, None, 7, rdp.keyboard("fr-ch"), "alice", (1280, 800))
    script = argv[argv.index("-c") + 1]
    assert "/kbd:0x0000100C" in script
    assert '/usr/bin/setxkbmap -display :0 "$4" ${5:+-variant "$5"}' in script
    assert script.index("setxkbmap") < script.index("exec /usr/bin/xfreerdp")  # the X server's layout first
    assert argv[-6:] == ["bridge", "alice", "1280", "800", "ch", "fr"]
    assert not [a for a in argv if password in a]
    assert "/from-stdin:force" in script and "/p:" not in script


def test_without_setxkbmap_freerdp_still_gets_the_layout(tmp_path: Path) -> None:
    progs = rdp.Programs(PROGS.bwrap, PROGS.xvnc, PROGS.xfreerdp, PROGS.setpriv, None)
    script = rdp.bridge_script(progs, 7, rdp.keyboard("de-de"))
    assert "setxkbmap" not in script and "/kbd:0x00000407" in script


def test_freerdps_exit_status_is_a_reason_of_visas() -> None:
    assert rdp.exit_reason(134) == rdp.LOGIN_REFUSED  # logon failure
    assert rdp.exit_reason(154) == rdp.LOGIN_REFUSED  # wrong password
    assert rdp.exit_reason(131) == "the machine's RDP server does not answer"
    assert rdp.exit_reason(143) == "no secure RDP connection could be agreed with the machine"
    assert rdp.exit_reason(12) == "the machine signed the session out, or refused the login"
    assert rdp.exit_reason(200) == "the RDP connection failed"
    for normal in (None, 0, 1, 11, -9):  # still running, ended as sessions do, killed by visa
        assert rdp.exit_reason(normal) is None
