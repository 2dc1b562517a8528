"""Network rules in the catalogue files: validated like flavours (a bad rule names its file, entry and
field, and nothing of the run is applied), applied by name, and what they give a server now."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.factories import make_cloud, make_experiment, make_image, make_plan, make_user
from visa.actor import SYSTEM
from visa.catalogue.loader import CatalogueError
from visa.catalogue.models import Flavour, NetworkRule
from visa.catalogue.service import apply_files
from visa.db import Database
from visa.instances.models import Instance, InstanceState
from visa.network.service import changes_for, wanted_groups
from visa.users.models import Role, RoleGrant

ROOT = Path(__file__).resolve().parents[2]

RULES = """\
# Every server reaches the facility's licence servers; staff machines the staff network.
- name: licences
  security_groups: [licence-servers]
- name: staff
  roles: [STAFF, ADMIN]
  security_groups: [staff-net]
- name: gpu-storage
  flavours: [esrf.gpu.a40]
  security_groups: [fast-storage]
- name: id21-control
  description: the id21 control network, for id21's users during their beamtime
  instruments: [id21]
  beamtime: true
  security_groups: [id21-control]
"""


def _files(tmp_path: Path, rules: str = RULES) -> list[Path]:
    flavours = tmp_path / "flavours"
    shutil.copytree(ROOT / "flavours", flavours, dirs_exist_ok=True)
    net = tmp_path / "network-rules"
    net.mkdir(exist_ok=True)
    (net / "rules.yaml").write_text(rules)
    return [flavours, net]


def _apply(db: Database, clock, paths: list[Path]):
    with db.unit_of_work() as s:
        return apply_files(SYSTEM, s, clock, paths)


def _rules(db: Database) -> dict[str, NetworkRule]:
    with db.sessionmaker() as s:
        return {r.name: r for r in s.scalars(select(NetworkRule))}


def test_rules_apply_by_name_update_and_delete(db: Database, clock, tmp_path: Path) -> None:
    diff = _apply(db, clock, _files(tmp_path))
    assert "+ network rule id21-control (id21-control)" in diff.changes
    rules = _rules(db)
    assert sorted(rules) == ["gpu-storage", "id21-control", "licences", "staff"]
    assert (rules["id21-control"].instruments, rules["id21-control"].beamtime) == (["id21"], True)
    assert rules["staff"].roles == ["ADMIN", "STAFF"]
    assert str(_apply(db, clock, _files(tmp_path))) == "no changes"

    # A rule's groups change; a rule no longer in the files is deleted (nothing refers to one).
    changed = RULES.replace("[staff-net]", "[staff-net, staff-printers]").replace(
        "- name: licences\n  security_groups: [licence-servers]\n", "")
    diff = _apply(db, clock, _files(tmp_path, changed))
    assert "- network rule licences" in diff.changes
    assert "~ network rule staff: security_groups ['staff-net'] -> ['staff-net', 'staff-printers']" in diff.changes
    assert sorted(_rules(db)) == ["gpu-storage", "id21-control", "staff"]


BAD = {
    "bad group name": ("[id21-control]", "['id21 control; drop']", "field 'security_groups': Value error, security group"),
    "no group": ("  security_groups: [id21-control]\n", "", "entry 'id21-control': field 'security_groups': Field required"),
    "unknown role": ("[STAFF, ADMIN]", "[STAFF, WIZARD]", "entry 'staff': field 'roles.1'"),
    "unknown flavour": ("[esrf.gpu.a40]", "[esrf.gpu.a4o]", "entry 'gpu-storage': field 'flavours.0': unknown flavour 'esrf.gpu.a4o'"),
    "unknown key": ("  beamtime: true\n", "  beamtime: true\n  during: beamtime\n", "entry 'id21-control': field 'during'"),
    "beamtime not a flag": ("beamtime: true", "beamtime: sometimes", "entry 'id21-control': field 'beamtime'"),
    "duplicate name": ("- name: gpu-storage", "- name: staff", "entry 'staff': field 'name': duplicate network rule name"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_rule_is_refused_whole_naming_file_entry_and_field(db: Database, clock, tmp_path: Path,
                                                                 case: str) -> None:
    _apply(db, clock, _files(tmp_path))
    old, new, expected = BAD[case]
    assert old in RULES
    with pytest.raises(CatalogueError) as err:
        _apply(db, clock, _files(tmp_path, RULES.replace(old, new, 1)))
    assert expected in err.value.message
    assert "network-rules/rules.yaml" in err.value.message
    assert sorted(_rules(db)) == ["gpu-storage", "id21-control", "licences", "staff"]  # nothing applied


def test_a_rule_for_an_unknown_cloud_names_it(db: Database, clock, tmp_path: Path) -> None:
    with pytest.raises(CatalogueError) as err:
        _apply(db, clock, _files(tmp_path, RULES + "- name: other\n  cloud: nowhere\n  security_groups: [x]\n"))
    assert "rules.yaml: entry 'other': field 'cloud': unknown cloud 'nowhere'" in err.value.message


def test_cli_refuses_a_bad_rule_file_with_its_name_and_field(cli, tmp_path: Path) -> None:
    paths = _files(tmp_path, RULES.replace("beamtime: true", "beamtime: sometimes"))
    result = cli("catalogue", "apply", *map(str, paths))
    assert result.exit_code != 0
    assert "rules.yaml: entry 'id21-control': field 'beamtime'" in result.output


def test_what_the_rules_give_by_role_flavour_membership_and_beamtime(db: Database, clock, tmp_path: Path) -> None:
    _apply(db, clock, _files(tmp_path))
    with db.unit_of_work() as s:
        cloud = make_cloud(s, clock, "sandbox", "openstack")
        ada = make_user(s, clock, "ada")
        exp = make_experiment(s, members=[ada], instrument="id21", start=date(2026, 3, 2))  # 2-5 March
        gpu = s.scalar(select(Flavour).where(Flavour.name == "esrf.gpu.a40"))
        plan = make_plan(s, make_image(s), gpu)
        inst = Instance(uid="u-net-1", name="n", owner=ada, plan=plan, cloud=cloud, state=InstanceState.ACTIVE,
                        cloud_server_id="srv-1", created_at=clock.now(), terminates_at=clock.now() + timedelta(days=9),
                        screen_width=1024, screen_height=768, secret="s")
        inst.experiments = [exp]
        s.add(inst)
        s.flush()
        rules = list(s.scalars(select(NetworkRule)))

        def at(day: int, hour: int = 12) -> list[str]:
            return sorted(wanted_groups(inst, rules, datetime(2026, 3, day, hour, tzinfo=UTC)))

        assert at(1) == ["fast-storage", "licence-servers"]
        assert at(2, 0) == at(5, 23) == ["fast-storage", "id21-control", "licence-servers"]  # dates inclusive
        assert at(6, 0) == ["fast-storage", "licence-servers"]
        # A role: the rule's groups while it is held.
        ada.grants.append(RoleGrant(role=Role.STAFF, granted_at=clock.now(),
                                    expires_at=datetime(2026, 3, 4, tzinfo=UTC)))
        assert "staff-net" in at(3) and "staff-net" not in at(4)
        # The owner taken off the experiment: its instrument's rule no longer applies.
        exp.members = []
        assert "id21-control" not in at(3)

        # Changes: only groups the rules name (or gave) are taken off; the cloud's own are kept.
        inst.provider_state = {"network_groups": ["old-rule-group"]}
        changes, wanted = changes_for(inst, rules, datetime(2026, 3, 4, 12, tzinfo=UTC),
                                      {"default", "by-hand", "id21-control", "old-rule-group"}, keep={"default"})
        assert [(c.group, c.add) for c in changes] == [
            ("fast-storage", True), ("licence-servers", True), ("id21-control", False), ("old-rule-group", False)]
        assert changes[0].rules == ("gpu-storage",)
        assert wanted == ["fast-storage", "licence-servers"]
