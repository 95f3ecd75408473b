"""Every role documents every variable it reads from the inventory: each default has an
argument spec, each option (and sub-option) a description, and each option's name appears
as code in the role's README, which is where an ops team looks first."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES_DIR = Path(__file__).resolve().parents[1] / "roles"
ROLES = sorted(path.name for path in ROLES_DIR.iterdir() if (path / "meta/argument_specs.yml").is_file())


def entry_points(role: str) -> dict[str, dict]:
    specs = yaml.safe_load((ROLES_DIR / role / "meta/argument_specs.yml").read_text())
    return specs["argument_specs"]


def spec_options(role: str) -> set[str]:
    return {name for entry in entry_points(role).values() for name in entry.get("options") or {}}


def undescribed(options: dict, prefix: str = "") -> list[str]:
    """The options, sub-options included, whose description is missing or blank."""
    missing = []
    for name, option in options.items():
        description = option.get("description")
        if isinstance(description, list):
            description = " ".join(str(line) for line in description)
        if not description or not str(description).strip():
            missing.append(prefix + name)
        missing += undescribed(option.get("options") or {}, f"{prefix}{name}.")
    return missing


def test_every_role_is_checked():
    assert set(ROLES) == {path.name for path in ROLES_DIR.iterdir() if path.is_dir()}, "a role without meta/argument_specs.yml"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_has_an_argument_spec(role):
    defaults = yaml.safe_load((ROLES_DIR / role / "defaults/main.yml").read_text()) or {}
    assert sorted(set(defaults) - spec_options(role)) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_option_has_a_description(role):
    missing = [
        f"{entry}: {name}" for entry, spec in entry_points(role).items() for name in undescribed(spec.get("options") or {})
    ]
    assert missing == []


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_names_every_option(role):
    readme = (ROLES_DIR / role / "README.md").read_text()
    assert sorted(name for name in spec_options(role) if f"`{name}`" not in readme) == []
