"""ModelKind is the one list of model kinds: CLI choices, contenders and export options follow it."""
import click

from rsd_deploy.bench.contenders import CONTENDERS
from rsd_deploy.cli.bench import cli as bench_cli
from rsd_deploy.cli.export import cli as export_cli
from rsd_deploy.cli.upscale import cli as upscale_cli
from rsd_deploy.models import Schedule
from rsd_deploy.types import ModelKind


def _choices(command: click.Command, option: str) -> list:
    (param,) = [p for p in command.params if p.name == option]
    return list(param.type.choices)


def test_every_list_of_kinds_is_model_kind():
    kinds = [k.value for k in ModelKind]
    assert kinds == ["rsd", "sinsr", "resshift-v3", "resshift-v1"]
    assert list(CONTENDERS) == kinds
    assert _choices(upscale_cli, "model") == _choices(export_cli, "model") == _choices(bench_cli, "contender") == kinds


def test_contender_recipes_follow_the_schedules():
    for kind in ModelKind:
        c = CONTENDERS[kind.value]
        schedule = Schedule.preset(kind.schedule_preset)
        assert c.nfe == (schedule.T if kind.multistep else 1) and c.schedule == kind.schedule_preset
        assert c.noise_channels == (1 if kind is ModelKind.RSD else 0)
