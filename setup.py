"""The build hook of visa's wheel and sdist (everything else is in pyproject.toml).

visa/static/ (the pages' scripts and styles, noVNC, uPlot, Swagger UI) is built from web/ by
scripts/build-web.sh and scripts/build-apidocs.sh (npm ci from the lock files) and is not in
git; the demo's catalogue and sample experiments live at the repository's root. Building a
wheel or an sdist from a source checkout builds the assets and copies the demo's files into
the package (visa/demo_data/), as JupyterLab's own packages build their assets when built; an
sdist carries them built, so a wheel built from it needs no npm.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
NEEDED = (
    "visa/static/js/app.js",
    "visa/static/css/visa.css",
    "visa/static/vendor/novnc/core/rfb.js",
    "visa/static/admin/admin.js",
    "visa/demo_data/experiments.json",
)


def build_assets() -> None:
    if (ROOT / "web" / "src").is_dir():  # a source checkout (an sdist has them built)
        for script in ("scripts/build-web.sh", "scripts/build-apidocs.sh"):
            subprocess.run(["bash", str(ROOT / script)], cwd=ROOT, check=True)
        demo = ROOT / "visa" / "demo_data"
        shutil.rmtree(demo, ignore_errors=True)
        for folder in ("flavours", "images"):
            (demo / folder).mkdir(parents=True)
            for path in sorted((ROOT / folder).glob("*.yaml")):
                shutil.copy2(path, demo / folder / path.name)
        shutil.copy2(ROOT / "deploy" / "demo" / "experiments.json", demo / "experiments.json")
    missing = [p for p in NEEDED if not (ROOT / p).is_file()]
    if missing:
        raise SystemExit(
            f"visa's front-end assets are missing ({', '.join(missing)}): build from a source "
            "checkout with npm (scripts/build-web.sh, scripts/build-apidocs.sh)"
        )


class BuildPy(build_py):
    def run(self) -> None:
        if not getattr(
            self, "editable_mode", False
        ):  # an editable install serves the tree (make setup builds)
            build_assets()
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        build_assets()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
