"""The README's generated parts and promises stay true: the configuration table matches the
settings model, the quick start is the two commands, every command it documents exists."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from config.settings import ENV_PREFIX, Settings
from cryptocast.settings_doc import BEGIN, END, replace_table, rows, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_table_is_up_to_date() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text, "the README lost its settings-table markers"
    assert replace_table(text, settings_table()) == text, (
        "README's configuration table is out of date: run `make docs`"
    )


def test_table_lists_every_setting_of_every_group() -> None:
    def env_names(model: type[BaseModel], prefix: str) -> set[str]:
        out: set[str] = set()
        for name, field in model.model_fields.items():
            a = field.annotation
            if isinstance(a, type) and issubclass(a, BaseModel):
                out |= env_names(a, f"{prefix}{name.upper()}__")
            else:
                out.add(f"{prefix}{name.upper()}")
        return out

    listed = {env.strip("`") for env, _default, _meaning in rows()}
    assert listed == env_names(Settings, ENV_PREFIX)
    assert "CRYPTOCAST_MODEL__UNITS" in listed and "CRYPTOCAST_REDIS_URL" in listed
    assert all(meaning for _env, _default, meaning in rows()), "a setting has no description"


def test_quick_start_is_the_two_make_commands() -> None:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S)
    assert block is not None
    commands = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert commands == ["make test", "make demo"]


def test_documented_commands_exist() -> None:
    from typer.main import get_command

    from cryptocast.cli import app

    group = get_command(app)
    names = set(group.commands)  # type: ignore[attr-defined]
    text = README.read_text()
    for cmd in ("up", "demo", "watch", "status", "ingest", "forecast"):
        assert f"cryptocast {cmd}" in text, cmd
        assert cmd in names, cmd
