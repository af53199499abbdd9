"""The ``nere`` command. Sub-commands load lazily, so ``nere extract`` and
``nere --help`` never import torch; only the training and export commands do, and a
command whose extra is not installed stops with the ``pip install`` line that adds it."""
from __future__ import annotations

import importlib

import click

from nere.extras import install_hint, require

# name -> (module, attribute, one-line help shown by `nere --help`, extras it cannot run without)
COMMANDS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "train": ("nere.train_commands", "train", "Train an NER, RE or joint model into a checkpoint folder.", ("train",)),
    "evaluate": ("nere.evaluate_command", "evaluate", "Score a checkpoint or bundle on a dataset split.", ()),
    "study": ("nere.study_command", "study", "Run the whole model comparison and regenerate the result tables.", ()),
    "export": ("nere.export.cli", "export", "Export a checkpoint to an ONNX bundle (fp32, fp16, int8).", ("export",)),
    "extract": ("nere.engine.cli", "extract", "Extract entities and relations from Parquet corpora.", ()),
    "bench": ("nere.bench.command", "bench", "Benchmark latency and throughput of exported bundles.", ("bench",)),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _, extras = COMMANDS[name]
        require(f"`nere {name}`", *extras)  # one line naming the extra, before any import fails
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as err:  # a module the extras table does not list
            missing = err.name or str(err)
            if missing.split(".")[0] == "nere":
                raise  # our own bug, not a missing extra: show it
            fix = install_hint(*extras) if extras else "pip install nere"
            raise click.ClickException(f"`nere {name}` needs {missing}, not installed; install with: {fix}") from err

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_, _) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nere")
def main() -> None:
    """NERE: train NER/RE models, export them to ONNX, run them over Parquet corpora."""


if __name__ == "__main__":
    main()
