"""`nere bench` smoke tests on tiny bundles and a tiny corpus: the report's structure and
files, the model-only replay, targets arithmetic, checkpoint lookup, the corpus script.
No test asserts a speed."""
from __future__ import annotations

import importlib.util
import json
import re
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from fixtures_bundles import make_bundle
from nere.bench.command import checkpoint_of, evaluate_targets
from nere.bench.measure import profile_pass
from nere.bench.proc import measure
from nere.cli import main
from nere.engine.api import Engine

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "Alice Smith works for Acme Corp in Paris. Bob lives in London city.",
    "The Globex Inc is in Paris. Carol Jones works for Globex Inc and lives in London.",
    "Nothing here.",
    "Bob works for Acme Corp .",
]
MODEL_KEYS = {"name", "bundle", "task", "model", "precision", "sha256", "provider", "provider_notes", "batch_tokens",
              "streams", "threads_per_stream", "re_streams", "checkpoint", "compute", "baseline_key", "re_bundle", "metrics", "bundle_bytes", "end_to_end", "model_only", "end_to_end_over_model_only",
              "end_to_end_over_model_only_split", "end_to_end_cpu", "end_to_end_model_idle_ms", "end_to_end_model_calls_in_flight", "breakdown_s", "model_batches", "outputs", "latency", "memory", "rss_scaling"}
RATE_KEYS = {"seconds", "documents_per_s", "sentences_per_s", "tokens_per_s", "seconds_all"}


def write_corpus(path: Path, n: int = 24) -> Path:
    pq.write_table(pa.table({"id": list(range(n)), "text": [TEXTS[i % len(TEXTS)] for i in range(n)]}), path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return {"joint": make_bundle(root / "joint", task="joint"),
            "ner": make_bundle(root / "ner-crf", task="ner", decoding="crf"),
            "re": make_bundle(root / "re-only", task="re"),
            "corpus": write_corpus(root / "corpus.parquet")}


def assert_rates_are_counts_over_seconds(rates: dict, corpus: dict, with_tokens: bool) -> None:
    """A reported rate is the corpus's counts over the median of the measured seconds (which
    the report rounds to 0.1 ms: the rate must lie within what that rounding allows)."""
    seconds = statistics.median(rates["seconds_all"])
    assert seconds > 0 and rates["seconds"] == pytest.approx(seconds, abs=1e-4)
    counts = {"documents_per_s": corpus["documents"], "sentences_per_s": corpus["sentences"]}
    if with_tokens:  # the corpus section counts the first model's tokens (tokenizers may differ)
        counts["tokens_per_s"] = corpus["tokens"]
    for key, n in counts.items():
        assert 0.99 * n / (seconds + 5e-5) <= rates[key] <= 1.01 * n / max(seconds - 5e-5, 1e-9), (key, rates)
        # the same seconds divide every count: the rates' ratios are the counts' ratios
        assert rates[key] / rates["documents_per_s"] == pytest.approx(n / corpus["documents"], rel=1e-3)


def test_rates_divide_the_counts_by_the_median_seconds():
    from nere.bench.command import _rates_of

    got = _rates_of(10, 30, 400, [4.0, 1.0, 2.0])
    assert got == {"seconds": 2.0, "documents_per_s": 5.0, "sentences_per_s": 15.0, "tokens_per_s": 200.0,
                   "seconds_all": [4.0, 1.0, 2.0]}
    got = _rates_of(7, 7, 7, [0.5])
    assert got["documents_per_s"] == 14.0 and got["tokens_per_s"] == 14.0
    assert _rates_of(7, 7, 7, []) == {"seconds_all": []}


def run_cli(args: list[str]):
    return CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)


def test_bench_writes_report_with_stable_keys(tiny, tmp_path):
    out = tmp_path / "report"
    res = run_cli(["--model", str(tiny["joint"]), "--model", str(tiny["ner"]), "--corpus", str(tiny["corpus"]),
                   "--repeats", "2", "--batch-sizes", "1,2", "--latency-seconds", "0", "--threads", "1",
                   "--rss-corpus", str(tiny["corpus"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "throughput.png", "latency.png", "rss.png"}
    r = json.loads((out / "report.json").read_text())
    assert set(r) == {"schema", "created", "command", "machine", "versions", "settings", "corpus", "models",
                      "baselines", "targets"}
    assert r["schema"] == "nere-bench/1" and r["baselines"] == []
    assert {"cpu_model", "logical_cores", "load_avg_start", "load_avg_end"} <= set(r["machine"])
    assert {"onnxruntime", "numpy"} <= set(r["versions"]) and "torch" not in r["versions"]
    assert r["corpus"]["documents"] == 24 and r["corpus"]["sentences"] == 6 * 2 + 6 * 2 + 6 + 6
    assert [m["name"] for m in r["models"]] == ["joint", "ner-crf"]
    for m in r["models"]:
        assert set(m) == MODEL_KEYS
        assert set(m["end_to_end"]) == RATE_KEYS and set(m["model_only"]) == RATE_KEYS
        # the fixture graphs are lookup tables: no weight products, so no share of the rate
        assert m["compute"]["stage1_weight_flops_per_token"] == 0 and m["compute"]["yardstick"]["gflops"] > 0
        assert m["compute"]["end_to_end_fraction"] is None
        assert len(m["end_to_end"]["seconds_all"]) == 2 and len(m["model_only"]["seconds_all"]) == 2
        assert m["end_to_end"]["documents_per_s"] > 0 and m["end_to_end_over_model_only"] > 0
        cpu = m["end_to_end_cpu"]  # one intra-op thread: the model's CPU is the calling thread's
        assert set(cpu) == {"process_us_per_document", "model_us_per_document", "engine_us_per_document", "model_share"}
        assert cpu["process_us_per_document"] > cpu["model_us_per_document"] > 0 and 0 < cpu["model_share"] < 1
        assert cpu["engine_us_per_document"] == pytest.approx(
            cpu["process_us_per_document"] - cpu["model_us_per_document"], abs=0.2)
        idle = m["end_to_end_model_idle_ms"]  # wall time before the first model call and after the last
        assert set(idle) == {"before_first_model_call", "after_last_model_call", "share_of_wall"}
        assert idle["before_first_model_call"] > 0 and idle["after_last_model_call"] > 0
        assert 0 < idle["share_of_wall"] < 1
        parts = m["end_to_end_over_model_only_split"]  # the ratio as CPU added x cores left idle
        assert set(parts) == {"cores", "model_only_process_us_per_document", "model_only_cpu_busy",
                              "end_to_end_cpu_busy", "cpu_ratio", "busy_ratio"}
        assert parts["model_only_process_us_per_document"] > 0 and 0 < parts["cpu_ratio"]
        assert parts["end_to_end_cpu_busy"] > 0 and parts["model_only_cpu_busy"] > 0  # other threads count too
        fly = m["end_to_end_model_calls_in_flight"]  # wall inside model calls over the first-to-last window
        assert set(fly) == {"mean_calls", "stage1_streams", "re_streams"}
        assert 0 < fly["mean_calls"] <= fly["stage1_streams"] + 0.01 and fly["re_streams"] is None
        assert [x["batch_size"] for x in m["latency"]] == [1, 2]
        assert all(x["samples"] >= 5 and x["p50_ms"] <= x["p99_ms"] for x in m["latency"])
        assert m["memory"]["returncode"] == 0 and m["memory"]["peak_rss_mb"] > 0
        assert m["memory"]["peak_source"] == "VmHWM at exit"
        assert m["memory"]["documents"] == 24
        assert len(m["rss_scaling"]) == 1 and m["rss_scaling"][0]["timeline"]
        assert set(m["breakdown_s"]) == {"read", "prepare", "stage1", "stage2", "decode_assemble", "parquet_encode",
                                         "total"}
    # models take turns batch by batch: the same number of samples for each
    assert len({m["latency"][0]["samples"] for m in r["models"]}) == 1
    for i, m in enumerate(r["models"]):
        for section in ("end_to_end", "model_only"):
            assert_rates_are_counts_over_seconds(m[section], r["corpus"], with_tokens=i == 0)
    joint = r["models"][0]
    assert joint["outputs"]["relations"] > 0 and joint["model_batches"]["stage2"] > 0
    assert {t["name"] for t in r["targets"]} == {"end_to_end_over_model_only"}
    md = (out / "report.md").read_text()
    assert "| joint | fp32 |" in md and "## Latency" in md and "## Targets" in md


def test_ratio_split_multiplies_back_to_each_rounds_ratio():
    """end to end / model only == CPU ratio x busy ratio, exactly, round by round: wall =
    CPU / (busy share x cores); a non-CPU provider is skipped with the reason."""
    from nere.bench.command import _ratio_split

    engine = SimpleNamespace(provider="CPUExecutionProvider", describe=lambda: {"threads": 2})
    # one round: 100 documents; end to end 2.0 s wall on 3.6 s CPU, model only 1.6 s on 3.1 s
    c = SimpleNamespace(engine=engine, e2e=[2.0], e2e_cpu=[{"process": 3.6}], model=[1.6], model_cpu=[3.1])
    parts = _ratio_split(c, 100)
    assert parts["cores"] == 2 and parts["model_only_process_us_per_document"] == pytest.approx(31000.0)
    assert parts["end_to_end_cpu_busy"] == pytest.approx(0.9) and parts["model_only_cpu_busy"] == pytest.approx(0.9688, abs=1e-4)
    assert parts["cpu_ratio"] * parts["busy_ratio"] == pytest.approx(1.6 / 2.0, abs=1e-3)
    engine.provider = "CUDAExecutionProvider"
    assert "not CPU time" in _ratio_split(c, 100)["skipped"]


def test_cpu_split_only_where_the_model_runs_in_the_calling_thread(tiny, tmp_path):
    """The model's CPU is told apart only for one intra-op thread per call (a separate RE
    bundle's calls too); the end-to-end run then reports process >= model CPU."""
    from nere.bench.measure import cpu_split_note, end_to_end

    one = Engine(tiny["ner"], device="cpu", threads=1)
    assert cpu_split_note(one) is None
    cpu: dict = {}
    end_to_end(one, tiny["corpus"], None, tmp_path / "o", cpu=cpu)
    assert cpu["process"] >= cpu["model"] > 0
    assert "intra-op" in cpu_split_note(Engine(tiny["ner"], device="cpu", threads=2, streams=1))
    assert "RE call" in cpu_split_note(Engine(tiny["ner"], re_bundle=tiny["re"], device="cpu", threads=2, streams=2,
                                              re_streams=1))
    assert cpu_split_note(Engine(tiny["ner"], re_bundle=tiny["re"], device="cpu", threads=2, streams=2,
                                 re_streams=2)) is None  # every call on one thread: the clock sees all of it
    both = Engine(tiny["ner"], re_bundle=tiny["re"], device="cpu", threads=1)
    cpu = {}
    end_to_end(both, tiny["corpus"], None, tmp_path / "o2", cpu=cpu)
    assert cpu["process"] >= cpu["model"] > 0


@pytest.mark.parametrize("batch_tokens", [None, 48])
def test_model_only_replays_the_engines_stage_calls(tiny, batch_tokens):
    engine = Engine(tiny["joint"], device="cpu", threads=1, batch_tokens=batch_tokens)
    prof = profile_pass(engine, tiny["corpus"], None)
    calls = prof.recorder.calls
    assert [c[0] for c in calls].count("stage1") == prof.batches["stage1"] > 0
    assert [c[0] for c in calls].count("stage2") == prof.batches["stage2"] > 0
    # stage 2 reads the hidden states of an earlier stage-1 call (no copies kept); with a
    # small budget the pipeline decodes groups of batches, so not always the latest one
    refs = []
    for k, (stage, args, ref) in enumerate(calls):
        if stage == "stage2":
            assert args[1] is None and calls[ref][0] == "stage1" and ref < k
            refs.append((ref, k))
    if batch_tokens is not None:
        assert any(any(c[0] == "stage1" for c in calls[ref + 1 : k]) for ref, k in refs)
    assert prof.recorder.replay() > 0 and prof.recorder.replay(streams=2) > 0
    assert prof.stats.entities == engine.extract_all(str(tiny["corpus"])).entities.num_rows


def test_replay_runs_a_separate_re_bundles_calls_in_their_own_lane(tiny, monkeypatch):
    """A separate RE bundle's calls replay after the NER calls, at most ``re_streams`` at
    once (each with its own share of the threads, as in the engine), the NER calls at most
    ``streams`` at once; every recorded call runs once."""
    import threading

    import nere.bench.measure as bench_measure
    from nere.bench.command import _replay_lanes

    engine = Engine(tiny["ner"], re_bundle=tiny["re"], device="cpu", threads=2, streams=2, re_streams=1)
    prof = profile_pass(engine, tiny["corpus"], None)
    re_graphs = {id(engine.pipeline.re_bundle.stage1), id(engine.pipeline.re_bundle.stage2)}
    lanes = _replay_lanes(SimpleNamespace(engine=engine))
    assert set(lanes) == re_graphs and set(lanes.values()) == {1}
    recorded = [id(args[0]) in re_graphs for _, args, _ in prof.recorder.calls]
    assert any(recorded) and not all(recorded)
    lock, now, most, order = threading.Lock(), {True: 0, False: 0}, {True: 0, False: 0}, []
    real1, real2 = bench_measure.run_stage1, bench_measure.run_stage2

    def counted(real):
        def call(graph, *args):
            lane = id(graph) in re_graphs
            with lock:
                now[lane] += 1
                most[lane] = max(most[lane], now[lane])
                order.append(lane)
            try:
                return real(graph, *args)
            finally:
                with lock:
                    now[lane] -= 1
        return call

    monkeypatch.setattr(bench_measure, "run_stage1", counted(real1))
    monkeypatch.setattr(bench_measure, "run_stage2", counted(real2))
    assert prof.recorder.replay(2, lanes) > 0
    assert sorted(order) == sorted(recorded)  # every call once
    assert order == sorted(order)  # the NER lane first, then the RE lane
    assert most[True] == 1 and 1 <= most[False] <= 2


def test_bench_several_re_bundles_side_by_side(tiny, tmp_path):
    """--re-model is repeatable: every --model runs with every RE bundle, in one report."""
    import shutil

    other = tmp_path / "re-other"
    shutil.copytree(tiny["re"], other)
    out = tmp_path / "report"
    res = run_cli(["--model", str(tiny["ner"]), "--re-model", str(tiny["re"]), "--re-model", str(other),
                   "--corpus", str(tiny["corpus"]), "--repeats", "1", "--no-latency", "--no-rss", "--threads", "1",
                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["ner-crf+re-only", "ner-crf+re-other"]
    assert [m["re_bundle"]["bundle"] for m in report["models"]] == [str(tiny["re"]), str(other)]
    assert report["models"][0]["outputs"] == report["models"][1]["outputs"]  # the same RE graph
    assert report["settings"]["re_models"] == [str(tiny["re"]), str(other)]
    # one --re-checkpoint cannot be the baseline of two RE bundles
    res = run_cli(["--model", str(tiny["ner"]), "--re-model", str(tiny["re"]), "--re-model", str(other),
                   "--re-checkpoint", str(tmp_path), "--corpus", str(tiny["corpus"]), "--out", str(out)])
    assert res.exit_code == 1 and "exactly one --re-model" in res.output and "Traceback" not in res.output


def test_bench_separate_re_bundle(tiny, tmp_path):
    out = tmp_path / "report"
    res = run_cli(["--model", str(tiny["ner"]), "--re-model", str(tiny["re"]), "--corpus", str(tiny["corpus"]),
                   "--repeats", "1", "--no-latency", "--no-rss", "--threads", "2", "--streams", "1", "--streams", "2",
                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    one, two = json.loads((out / "report.json").read_text())["models"]
    for m, streams in ((one, 1), (two, 2)):
        assert m["name"] == f"ner-crf+re-onlyx{streams}" and m["re_bundle"]["bundle"] == str(tiny["re"])
        assert (m["streams"], m["threads_per_stream"]) == (streams, 2 // streams)
        assert m["outputs"]["relations"] > 0 and m["model_batches"]["stage2"] > 0
    assert one["outputs"] == two["outputs"]
    # the RE bundle runs one call at a time: it keeps all threads whatever the NER streams
    engine = Engine(tiny["ner"], tiny["re"], device="cpu", threads=2, streams=2)
    threads_of = lambda b: b.stage1.session.get_session_options().intra_op_num_threads  # noqa: E731
    assert (threads_of(engine.bundle), threads_of(engine.re_bundle)) == (1, 2)
    engine = Engine(tiny["ner"], tiny["re"], device="cpu", threads=1)
    calls = profile_pass(engine, tiny["corpus"], None).recorder.calls
    # the RE bundle's own stage 1 feeds its stage 2
    assert all(args[1] is None and calls[ref][1][2] == ("hidden",) for stage, args, ref in calls if stage == "stage2")


def test_bench_torch_baseline(tmp_path):
    torch = pytest.importorskip("torch")
    from test_export import export_tiny, tiny_ner

    from nere.train.checkpoint import save_checkpoint

    model, tok, _ = tiny_ner("bert-crf")
    ckpt = save_checkpoint(model, tok, tmp_path / "ckpt", {})
    bundles = [export_tiny(model, tok, tmp_path, p, name=f"tiny-{p}") for p in ("fp32", "int8")]
    corpus = write_corpus(tmp_path / "c.parquet", 12)
    out = tmp_path / "report"
    res = run_cli([*sum((["--model", str(b)] for b in bundles), []), "--corpus", str(corpus), "--out", str(out),
                   "--baseline", "torch", "--checkpoint", str(ckpt), "--repeats", "1", "--batch-sizes", "4",
                   "--latency-seconds", "0", "--threads", "1", "--baseline-batch-docs", "5", "--no-rss"])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "report.json").read_text())
    assert r["versions"]["torch"] == torch.__version__
    (b,) = r["baselines"]
    assert b["checkpoint"] == str(ckpt) and b["batch_docs"] == 5 and b["precision"] == "fp32"
    assert set(b["end_to_end"]) == RATE_KEYS and b["end_to_end"]["documents_per_s"] > 0
    assert b["latency"][0]["batch_size"] == 4 and b["memory"] is None
    # the baseline decodes like the engine: same entities on the fp32 bundle's corpus
    assert b["outputs"]["entities"] == r["models"][0]["outputs"]["entities"]
    assert [m["precision"] for m in r["models"]] == ["fp32", "int8"]
    speed = [t for t in r["targets"] if t["name"] == "int8_speedup_vs_torch"]
    assert [t["subject"] for t in speed] == ["tiny-int8"] and speed[0]["value"] > 0


def test_speedup_pairs_runs_of_the_same_round():
    # load drifts between rounds: each round's baseline/model pair is compared, then the median
    m = {"name": "b-int8", "bundle": "runs/b-int8", "precision": "int8", "checkpoint": "ck", "baseline_key": "ck",
         "re_bundle": None, "metrics": {}, "rss_scaling": [], "end_to_end_over_model_only": 1.0,
         "end_to_end": {"documents_per_s": 10.0, "seconds_all": [5.0, 1.0, 1.0]},
         "model_only": {"seconds_all": [5.0, 1.0, 1.0]}}
    b = {"name": "torch", "key": "ck", "end_to_end": {"documents_per_s": 10 / 6, "seconds_all": [10.0, 2.0, 6.0]}}
    (speed,) = [t for t in evaluate_targets({"models": [m], "baselines": [b]}) if t["name"] == "int8_speedup_vs_torch"]
    assert speed["value"] == 2.0 and speed["passed"] is False  # the ratio of medians would say 6


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="VmHWM needs Linux /proc")
def test_child_peak_is_the_childs_own():
    # ru_maxrss of a child would include this process's 200 MB; VmHWM does not
    held = bytearray(200 * 2**20)
    held[:: 4096] = b"1" * len(held[:: 4096])
    code = ("import os; from nere.bench.proc import _write_hwm_at_exit; _write_hwm_at_exit(); "
            "x = bytearray(60 * 2**20); x[::4096] = b'1' * len(x[::4096])")
    r = measure([sys.executable, "-c", code])
    assert r["returncode"] == 0 and r["peak_source"] == "VmHWM at exit"
    assert 60 < r["peak_rss_mb"] < 200
    del held


def test_targets_arithmetic():
    def model(name, precision, ckpt, docs_s, model_s, f1=None, scaling=()):
        return {"name": name, "bundle": f"runs/{name}", "precision": precision, "checkpoint": ckpt,
                "baseline_key": ckpt, "re_bundle": None, "metrics": {} if f1 is None else {"f1": f1},
                "end_to_end": {"documents_per_s": docs_s, "seconds": 1 / docs_s, "seconds_all": [1 / docs_s]},
                "model_only": {"seconds": 1 / model_s, "seconds_all": [1 / model_s]},
                "end_to_end_over_model_only": model_s and docs_s / model_s,
                "rss_scaling": [{"documents": d, "peak_rss_mb": mb} for d, mb in scaling]}

    report = {"models": [model("a-fp32", "fp32", "ck", 10, 11, f1=0.80),
                         model("a-int8", "int8", "ck", 40, 50, f1=0.796, scaling=[(200_000, 390), (10_000, 300)])],
              "baselines": [{"name": "torch", "key": "ck", "end_to_end": {"documents_per_s": 12.5, "seconds_all": [1 / 12.5]}}]}
    got = {(t["name"], t["subject"]): (t["value"], t["passed"]) for t in evaluate_targets(report)}
    assert got == {
        ("end_to_end_over_model_only", "a-fp32"): (pytest.approx(10 / 11, abs=1e-4), True),
        ("end_to_end_over_model_only", "a-int8"): (0.8, False),
        ("int8_speedup_vs_torch", "a-int8"): (pytest.approx(3.2), True),
        ("int8_f1_drop", "a-int8 f1"): (0.004, True),
        ("rss_growth", "a-int8"): (1.3, False),
    }
    # a missed e2e target says which factor to work on, when the report has the split
    report["models"][1]["end_to_end_over_model_only_split"] = {"cpu_ratio": 0.86, "busy_ratio": 0.93}
    (e2e,) = [t for t in evaluate_targets(report) if t["subject"] == "a-int8" and t["name"] == "end_to_end_over_model_only"]
    assert "CPU ratio 0.860 (the engine's own CPU) x busy ratio 0.930 (cores left idle)" in e2e["detail"]


def test_checkpoint_of_reads_the_export_command(tmp_path, monkeypatch):
    ckpt = tmp_path / "runs" / "ck"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    made = lambda cmd: {"made_by": {"command": cmd}}  # noqa: E731
    assert checkpoint_of(made("nere export runs/ck --out b --precision int8")) == "runs/ck"
    assert checkpoint_of(made("nere export --precision int8 --overwrite runs/ck --out b")) == "runs/ck"
    assert checkpoint_of({"made_by": {"checkpoint": str(ckpt), "command": "x"}}) == str(ckpt)
    assert checkpoint_of(made("nere export runs/missing --out b")) is None
    assert checkpoint_of(made("pytest")) is None and checkpoint_of({}) is None


def test_bench_user_errors_are_one_line(tiny, tmp_path):
    res = CliRunner().invoke(main, ["bench", "--model", str(tiny["re"]), "--corpus", str(tiny["corpus"]),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "RE-only" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["bench", "--model", str(tiny["ner"]), "--corpus", str(tmp_path / "none.parquet"),
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "none.parquet" in res.output
    res = CliRunner().invoke(main, ["bench", "--model", str(tiny["ner"]), "--corpus", str(tiny["corpus"]),
                                    "--batch-sizes", "1,x", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--batch-sizes" in res.output
    res = CliRunner().invoke(main, ["bench", "--model", str(tiny["ner"]), "--corpus", str(tiny["corpus"]),
                                    "--baseline", "torch", "--out", str(tmp_path / "o"), "--no-latency", "--no-rss"])
    assert res.exit_code == 1 and "--checkpoint" in res.output and "Traceback" not in res.output


def _make_corpus_module():
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_corpus_repeats_documents(tmp_path):
    mc = _make_corpus_module()
    src = write_corpus(tmp_path / "src.parquet", 4)
    assert mc.main(["--source", str(src), "--docs", "10", "--out", str(tmp_path / "r.parquet")]) == 0
    t = pq.read_table(tmp_path / "r.parquet")
    assert t.column("id").to_pylist() == list(range(10))
    assert t.column("text").to_pylist() == [TEXTS[i % 4] for i in range(10)]
    sents = ["A b .", "C d .", "E f .", "G h .", "I j ."]
    docs = mc.grouped_documents(sents, (2, 3), seed=1)
    first, n = [], 0
    while n < len(sents):  # the first pass over the sentences
        first.append(next(docs))
        n += first[-1].count(" .")
    assert n == len(sents) and all(d.count(" .") <= 3 for d in first)
    assert sorted(re.findall(r"[A-Z] [a-z] \.", " ".join(first))) == sorted(sents)
    assert all(2 <= d.count(" .") <= 3 for d in first[:-1])  # only a pass's last document may be shorter
    assert mc.main(["--source", "nope:test", "--docs", "3", "--out", str(tmp_path / "x.parquet")]) == 1


def test_weight_flops_per_token_counts_weight_products(tmp_path):
    """2 x multiply-adds with weight matrices: MatMul (also through a Cast), quantized
    MatMul, Gemm (its bias ignored), LSTM input + recurrent weights; activation x
    activation products are not weights and are left out."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nere.bench.compute import weight_flops_per_token

    def init(name, shape, dtype=np.float32):
        return numpy_helper.from_array(np.zeros(shape, dtype), name)

    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"]),                      # 4 x 3
        helper.make_node("Cast", ["w2"], ["w2f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["h1", "w2f"], ["h2"]),                    # 3 x 5 through a Cast
        helper.make_node("MatMulInteger", ["q", "w3", "zp", "zp"], ["h3"]),   # 5 x 2 int8
        helper.make_node("Gemm", ["h2", "w4", "b4"], ["h4"]),                 # 5 x 6, bias 1-D
        helper.make_node("MatMul", ["h4", "h4"], ["scores"]),                 # activations only
        helper.make_node("LSTM", ["seq", "W", "R", "B"], ["out"], hidden_size=4),  # W (2,16,3), R (2,16,4)
    ]
    inits = [init("w1", (4, 3)), init("w2", (3, 5), np.float16), init("w3", (5, 2), np.int8), init("zp", (), np.int8),
             init("w4", (5, 6)), init("b4", (6,)), init("W", (2, 16, 3)), init("R", (2, 16, 4)), init("B", (2, 32))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert weight_flops_per_token(path) == 2 * (12 + 15 + 10 + 30) + 2 * (96 + 128)


def test_matmul_rate_and_compute_section():
    from nere.bench.compute import compute_section, matmul_gflops

    rate = matmul_gflops("CPUExecutionProvider", 1, seconds=0.01)
    assert rate["gflops"] > 0 and rate["provider"] == "CPUExecutionProvider" and rate["matmul"].startswith("float32")
    fake = {"gflops": 100.0, "matmul": "float32 1024x1024 @ 1024x1024", "provider": "CPUExecutionProvider", "threads": 1}
    sec = compute_section(ROOT / "artifacts" / "en-conll04-joint-int8" / "ner.onnx", fake, 2000.0, 4000.0)
    flops = sec["stage1_weight_flops_per_token"]
    assert 20e6 < flops < 23e6  # MiniLM-L6: 6 x (4 x 384^2 + 2 x 384 x 1536) multiply-adds, x2
    assert sec["tokens_per_s_at_matmul_rate"] == round(100e9 / flops, 1)
    assert sec["end_to_end_fraction"] == round(2000.0 * flops / 100e9, 4) and sec["model_only_fraction"] > 0


def test_plot_labels_break_at_pairings_and_baselines():
    from nere.bench.report import tick_label

    assert tick_label("ner-bundle+re-bundle", "int8") == "ner-bundle\n+re-bundle\n(int8)"
    assert tick_label("torch-eager-fp32:ner-ckpt+re-ckpt", "fp32 torch") == "torch-eager-fp32:\nner-ckpt\n+re-ckpt\n(fp32 torch)"
    long = tick_label("a-very-long-bundle-folder-name-of-forty-chars", "fp32")
    assert all(len(line) <= 28 for line in long.splitlines()) and long.endswith("(fp32)")


def test_bench_baseline_without_torch_is_one_install_line(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on an install without the train extra
    res = CliRunner().invoke(main, ["bench", "--model", str(tiny["joint"]), "--corpus", str(tiny["corpus"]),
                                    "--baseline", "torch", "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and not (tmp_path / "r").exists()
    (line,) = [x for x in res.output.splitlines() if x.strip()]
    assert "pip install 'nere[train]'" in line and "torch" in line
