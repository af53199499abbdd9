"""The engine-only install stays free of Ray and Spark: they load only with the cluster modules that need them."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from nere.cli import main


def test_engine_imports_neither_ray_nor_pyspark():
    code = textwrap.dedent(
        """
        import json, sys
        import nere.engine, nere.engine.api, nere.engine.cli
        import nere.engine.cluster, nere.engine.cluster.batches, nere.engine.cluster.blocks, nere.engine.cluster.cli
        from nere.engine import Engine
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "pyspark"))))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_ray_without_ray_installed_is_one_line(tmp_path):
    """With ray missing, --ray names the extra to install instead of a traceback."""
    code = textwrap.dedent(
        f"""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    raise ImportError("blocked", name=name)
        sys.meta_path.insert(0, Blocker())
        from nere.cli import main
        main(["extract", {str(tmp_path)!r}, "--model", {str(tmp_path)!r}, "--out", {str(tmp_path / "o")!r},
              "--ray", "auto"], prog_name="nere")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "pip install 'nere[ray]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_extract_help_lists_the_cluster_options():
    out = CliRunner().invoke(main, ["extract", "--help"]).output
    assert "--ray [auto|ADDRESS]" in out and "--actors" in out
