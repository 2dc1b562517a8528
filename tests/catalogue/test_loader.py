"""The catalogue as code: the repository's files apply, idempotently; bad files change nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from visa.actor import SYSTEM
from visa.catalogue.loader import CatalogueError
from visa.catalogue.models import Flavour, Image, Plan
from visa.catalogue.service import apply_files
from visa.db import Database

ROOT = Path(__file__).resolve().parents[2]


def _apply(db: Database, clock, *paths: Path):
    with db.unit_of_work() as s:
        return apply_files(SYSTEM, s, clock, list(paths))


def _copy_catalogue(tmp_path: Path) -> tuple[Path, Path]:
    flavours = tmp_path / "flavours"
    images = tmp_path / "images"
    shutil.copytree(ROOT / "flavours", flavours)
    images.mkdir()
    for f in (ROOT / "images").glob("*.yaml"):
        shutil.copy(f, images / f.name)
    return flavours, images


def test_repository_catalogue_applies_and_is_idempotent(db: Database, clock) -> None:
    diff = _apply(db, clock, ROOT / "flavours", ROOT / "images")
    assert "+ flavour esrf.gpu.a40 (16 cores, 32768 MB, 1x NVIDIA A40)" in diff.changes
    with db.sessionmaker() as s:
        flavours = {f.name: f for f in s.scalars(select(Flavour))}
        assert {n: (f.cores, f.memory_mb) for n, f in flavours.items()} == {
            "esrf.medium": (4, 4096),
            "esrf.large": (8, 16384),
            "esrf.gpu.a40": (16, 32768),
            "esrf.gpu.a40.xlarge": (32, 131072),
        }
        assert {i.environment for i in s.scalars(select(Image))} == {"Desktop", "Desktop staging", "Bliss", "JupyterLab"}
        assert s.scalar(select(func.count(Plan.id)).where(Plan.preset.is_(True))) == 1
        gpu = flavours["esrf.gpu.a40"]
        assert {lim.role.value for lim in gpu.limits if lim.role} == {"STAFF", "SCIENTIFIC_COMPUTING"}
        assert {lim.instrument.name for lim in gpu.limits if lim.instrument} == {"id16a", "id16b", "id19", "bm18"}
        # Idle GPUs are warned sooner; the other sizes keep the owner's inactivity limit alone.
        assert {n: f.idle_warning_hours for n, f in flavours.items()} == {
            "esrf.medium": None, "esrf.large": None, "esrf.gpu.a40": 12, "esrf.gpu.a40.xlarge": 12,
        }
    again = _apply(db, clock, ROOT / "flavours", ROOT / "images")
    assert not again, str(again)


def test_dry_run_changes_nothing(db: Database, clock, tmp_path: Path) -> None:
    _apply(db, clock, ROOT / "flavours", ROOT / "images")
    flavours, images = _copy_catalogue(tmp_path)
    (flavours / "esrf.large.yaml").write_text(
        (flavours / "esrf.large.yaml").read_text().replace("cores: 8", "cores: 12")
    )
    with db.sessionmaker() as s:
        diff = apply_files(SYSTEM, s, clock, [flavours, images])
        s.rollback()
    assert "~ flavour esrf.large: cores 8 -> 12" in diff.changes
    with db.sessionmaker() as s:
        assert s.scalar(select(Flavour.cores).where(Flavour.name == "esrf.large")) == 8


def test_removed_entries_are_hidden_not_deleted(db: Database, clock, tmp_path: Path) -> None:
    _apply(db, clock, ROOT / "flavours", ROOT / "images")
    flavours, images = _copy_catalogue(tmp_path)
    (images / "bliss.yaml").unlink()
    diff = _apply(db, clock, flavours, images)
    assert "- image bliss (hidden)" in diff.changes
    with db.sessionmaker() as s:
        assert s.scalar(select(Image.visible).where(Image.name == "bliss")) is False


LAB = "  - {protocol: JUPYTER, port: 8888}"
WEB = "\nweb_services:\n"
BAD = {
    "wrong type": ("flavours/esrf.large.yaml", "cores: 8", "cores: eight", "entry 'esrf.large': field 'cores'"),
    "missing field": ("flavours/esrf.large.yaml", "cloud_flavour: esrf.large", "", "entry 'esrf.large': field 'cloud_flavour'"),
    "unknown flavour": ("images/bliss.yaml", "flavour: esrf.large}", "flavour: esrf.huge}", "entry 'bliss': field 'plans.1.flavour': unknown flavour 'esrf.huge'"),
    "duplicate name": ("flavours/esrf.large.yaml", "name: esrf.large", "name: esrf.medium", "field 'name': duplicate flavour name"),
    "negative size": ("flavours/esrf.large.yaml", "memory_gb: 16", "memory_gb: -16", "entry 'esrf.large': field 'memory_gb'"),
    "no memory after rounding to MB": ("flavours/esrf.large.yaml", "memory_gb: 16", "memory_gb: 0.0001", "entry 'esrf.large': field 'memory_gb': Value error, must be at least 1 MB"),
    "no idle warning time": ("flavours/esrf.gpu.a40.yaml", "idle_warning_hours: 12", "idle_warning_hours: 0", "entry 'esrf.gpu.a40': field 'idle_warning_hours'"),
    "idle warning time not a number": ("flavours/esrf.gpu.a40.yaml", "idle_warning_hours: 12", "idle_warning_hours: soon", "entry 'esrf.gpu.a40': field 'idle_warning_hours'"),
    "oversized string": ("images/bliss.yaml", 'version: "2.1"', 'version: "' + "9" * 500 + '"', "entry 'bliss': field 'version'"),
    "unknown key": ("images/bliss.yaml", "icon: bliss", "icon: bliss\nflavor: oops", "entry 'bliss': field 'flavor'"),
    "warm window past the day": ("images/bliss.yaml", "flavour: esrf.large}", "flavour: esrf.large, warm: [{from: '07:00', to: '25:00', count: 1}]}", "entry 'bliss': field 'plans.1.warm"),
    "negative warm count": ("images/bliss.yaml", "flavour: esrf.large}", "flavour: esrf.large, warm: -1}", "entry 'bliss': field 'plans.1.warm"),
    "broken yaml": ("images/bliss.yaml", "icon: bliss", "icon: [bliss", "not valid YAML"),
    # A declared web service: its port, its name (a host name's label), no clash with the image's services.
    "web service on a low port": ("images/jupyterlab.yaml", LAB, LAB + WEB + "  - {name: dash, port: 80}",
                                  "entry 'jupyterlab': field 'web_services.0.port'"),
    "web service badly named": ("images/jupyterlab.yaml", LAB, LAB + WEB + "  - {name: My_Dash, port: 8050}",
                                "entry 'jupyterlab': field 'web_services.0.name'"),
    "web service named as a protocol": ("images/jupyterlab.yaml", LAB, LAB + WEB + "  - {name: jupyter, port: 8050}",
                                        "field 'web_services': Value error, the name 'jupyter' is already a service of the image"),
    "web service on a taken port": ("images/jupyterlab.yaml", LAB,
                                    LAB + WEB + "  - {name: dash, port: 8050}\n  - {name: board, port: 8888}",
                                    "field 'web_services': Value error, port 8888 of 'board' is already JUPYTER's"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_is_refused_whole_naming_file_entry_field(db: Database, clock, tmp_path: Path, case: str) -> None:
    _apply(db, clock, ROOT / "flavours", ROOT / "images")
    flavours, images = _copy_catalogue(tmp_path)
    rel, old, new, expected = BAD[case]
    target = tmp_path / rel
    assert old in target.read_text()
    target.write_text(target.read_text().replace(old, new))
    # A valid change elsewhere in the same run must not be applied either.
    (flavours / "esrf.medium.yaml").write_text((flavours / "esrf.medium.yaml").read_text().replace("cores: 4", "cores: 6"))
    with pytest.raises(CatalogueError) as err:
        _apply(db, clock, flavours, images)
    assert expected in err.value.message
    assert str(target.name) in err.value.message
    with db.sessionmaker() as s:
        assert s.scalar(select(Flavour.cores).where(Flavour.name == "esrf.medium")) == 4
        assert s.scalar(select(func.count(Plan.id)).where(Plan.enabled.is_(True))) == 12


def test_a_plan_keeps_machines_warm_by_the_time_of_day(db: Database, clock, tmp_path: Path) -> None:
    from datetime import time

    from visa.catalogue.service import warm_wanted

    flavours, images = _copy_catalogue(tmp_path)
    text = (images / "bliss.yaml").read_text()
    (images / "bliss.yaml").write_text(text.replace(
        "flavour: esrf.large}",
        "flavour: esrf.large, warm: [{from: '07:00', to: '19:00', count: 2}, {from: '19:00', to: '07:00', count: 1}]}"))
    diff = _apply(db, clock, flavours, images)
    with db.sessionmaker() as s:
        plans = {(p.image.name, p.flavour.name): p for p in s.scalars(select(Plan))}
        plan = plans[("bliss", "esrf.large")]
        assert [warm_wanted(plan, time(h)) for h in (6, 7, 12, 18, 19, 23)] == [1, 2, 2, 2, 1, 1]
        assert all(warm_wanted(p, time(12)) == 0 for k, p in plans.items() if k != ("bliss", "esrf.large"))
    (images / "bliss.yaml").write_text(text.replace("flavour: esrf.large}", "flavour: esrf.large, warm: 3}"))
    diff = _apply(db, clock, flavours, images)
    assert any(c.startswith("~ plan bliss/esrf.large: warm") for c in diff.changes), diff.changes
    with db.sessionmaker() as s:
        plan = s.scalars(select(Plan).join(Plan.image).where(Image.name == "bliss")).unique().all()
        assert {warm_wanted(p, time(3)) for p in plan} == {0, 3}
