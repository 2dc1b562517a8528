"""The boot scripts' failure markers, as read from a machine's console: hostile text."""

from __future__ import annotations

from visa.provisioning import report


def test_markers_after_a_console_prefix_are_found_in_order_once_each() -> None:
    console = (
        "[   12.1] cloud-init[512]: visa: FAILED data-mount: not mounted: /data/ev280\n"
        "some other line\n"
        "[   13.0] cloud-init[512]: visa: FAILED desktop-setup: setup-desktop exited with status 1\n"
        "[   13.0] cloud-init[512]: visa: FAILED data-mount: not mounted: /data/ev280\n"
        "visa: the CVMFS client is not installed in this image: repositories x are not mounted\n"
    )
    found = report.failures(console)
    assert [(f.step, f.reason, f.fatal) for f in found] == [
        ("data-mount", "not mounted: /data/ev280", False),
        ("desktop-setup", "setup-desktop exited with status 1", True),
    ]
    assert "desktop-setup" in report.summary(found) and "boot configuration failed" in report.summary(found)
    assert "data are not mounted" in report.summary(found[:1])


def test_a_failing_image_boot_script_is_reported_from_cloud_init_s_own_warning() -> None:
    console = "2026-12-02 util.py[WARNING]: Failed running /var/lib/cloud/instance/scripts/part-001 [1]\n"
    (found,) = report.failures(console)
    assert found.step == "boot-script" and found.fatal and "part-001" in found.reason


def test_nothing_reported_is_no_failure() -> None:
    assert report.failures(None) == [] and report.failures("") == []
    assert report.failures("FAKE CONSOLE OUTPUT\nANOTHER\nLAST LINE") == []


def test_hostile_console_text_comes_out_short_plain_and_one_line() -> None:
    reason = "\x1b[31m<script>alert(1)</script>\u202e\x07\x00" + "A" * 10_000
    console = "x" * 200_000 + f"\nvisa: FAILED desktop-setup: {reason}\r\nvisa: FAILED BAD/STEP: x\n"
    found = report.failures(console)
    assert [f.step for f in found] == ["desktop-setup"]  # a step name that is not a word is ignored
    text = report.summary(found)
    assert len(found[0].reason) <= report.REASON_MAX_CHARS and len(text) <= 600
    assert not any(ord(ch) < 32 or ch in "\x7f\u202e" for ch in text)
    assert "[31m" not in text and "\n" not in text
    # Kept as text: it is escaped where it is shown, never rendered as markup.
    assert "<script>alert(1)</script>" in text


def test_a_flood_of_markers_is_cut_to_the_last_few() -> None:
    console = "".join(f"visa: FAILED step-{i}: reason {i}\n" for i in range(1000))
    found = report.failures(console)
    assert len(found) == report.MAX_FAILURES and found[-1].step == "step-999"
