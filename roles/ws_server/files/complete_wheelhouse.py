"""Add to a wheelhouse the dependencies whose markers hold on the target only.

`pip download --python-version X` picks wheels for X, but evaluates dependency
markers against the Python running pip. A dependency such as redis-py's
``async-timeout; python_full_version < "3.11.3"`` is then skipped for a target
on 3.11.2 when the controller runs 3.11.7. This reads every wheel's metadata,
evaluates the markers for the target, and prints the requirements still missing
(one per line), so build-wheelhouse.sh can download them and ask again.

Usage: complete_wheelhouse.py WHEELHOUSE TARGET_PYTHON_VERSION ARCH ROOT_EXTRAS
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename


def target_environment(full_version: str, arch: str) -> dict[str, str]:
    major_minor = ".".join(full_version.split(".")[:2])
    return {
        "python_version": major_minor,
        "python_full_version": full_version,
        "implementation_name": "cpython",
        "implementation_version": full_version,
        "platform_python_implementation": "CPython",
        "platform_system": "Linux",
        "platform_machine": arch,
        "sys_platform": "linux",
        "os_name": "posix",
    }


def requirements_of(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata_name = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(metadata_name).decode()
    return [Requirement(line.split(":", 1)[1].strip()) for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def missing_requirements(wheelhouse: Path, environment: dict[str, str], root_extras: set[str]) -> list[str]:
    wheels = {canonicalize_name(parse_wheel_filename(wheel.name)[0]): wheel for wheel in wheelhouse.glob("*.whl")}
    missing: list[str] = []
    for name, wheel in wheels.items():
        extras = root_extras if name == "wsfleet" else set()
        for requirement in requirements_of(wheel):
            applies = requirement.marker is None or any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in extras | {""}
            )
            if applies and canonicalize_name(requirement.name) not in wheels:
                requirement.marker = None
                missing.append(str(requirement))
    return sorted(set(missing))


def main() -> None:
    wheelhouse, full_version, arch, extras = sys.argv[1:5]
    environment = target_environment(full_version, arch)
    for requirement in missing_requirements(Path(wheelhouse), environment, {e for e in extras.split(",") if e}):
        print(requirement)


if __name__ == "__main__":
    main()
