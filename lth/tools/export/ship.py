"""One round of a run exported: every file written, each checked against the run, and the report of it all.

:func:`export` (asked by :class:`ExportOptions`) writes the files of :mod:`~lth.tools.export.ticket`,
:mod:`~lth.tools.export.lthz`, :mod:`~lth.tools.export.shrunk` (a channel ticket: :mod:`~lth.tools.export.channels`)
and :mod:`~lth.tools.export.onnx`, then ``export.json``: the test accuracy evaluated afresh against ``rounds.csv``, the
round trip of the compressed file, the shrunk model and the ONNX model (run in onnxruntime) against the masked one,
the sizes and the per-layer runtime paths (:mod:`~lth.tools.export.sparse`). :func:`summary` is that report in
lines for people.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lth.config.run import RunConfig
from lth.core.anatomy import NotShrinkable, as_chain
from lth.core.catalog import GROUPS_OF_M, WHOLE_CHANNELS
from lth.core.errors import ConfigError
from lth.core.masks import Mask
from lth.core.structured import ChannelGroup
from lth.state.artifacts import save_tensors, write_bytes, write_json
from lth.tools.export.channels import (
    example_input,
    fold_channels,
    groups_of,
    remove_channels,
    semi_structured,
    structure,
    write_program,
)
from lth.tools.export.evaluate import correct, predict, read_test_split
from lth.tools.export.files import export_lock
from lth.tools.export.formats import write_safetensors, write_torch_prune
from lth.tools.export.lthz import bit_identical, compress, decompress
from lth.tools.export.onnx import onnx_outputs, write_onnx
from lth.tools.export.shrunk import chain_spec, shrink
from lth.tools.export.sparse import BENCH_BATCHES, pick_paths
from lth.tools.export.ticket import (
    RoundFiles,
    build_plain,
    choose_round,
    load_round,
    model_config,
    read_config_and_rounds,
    write_model,
    write_ticket,
)


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export` is asked for besides the run folder.

    ``round_index`` None picks :func:`~lth.tools.export.ticket.choose_round` with ``tolerance`` (accuracy points).
    ``out_dir`` defaults to ``<run_dir>/export/round_XX``. ``fp16`` stores the compressed file's values as fp16.
    ``data_dir`` overrides the run's ``paths.data_dir`` for the test set. ``format="torch-prune"`` also writes
    :data:`~lth.tools.export.formats.TORCH_PRUNE_FILE`.
    """

    round_index: int | None = None
    tolerance: float = 0.5
    out_dir: str | Path | None = None
    fp16: bool = False
    data_dir: str | Path | None = None
    format: str = "lth"


@dataclass(frozen=True)
class _Bench:
    """What the files of an export share: the folder they go to and the test set they are checked on, in batches."""

    out: Path
    test: tuple[torch.Tensor, torch.Tensor]
    batch_size: int


def _compressed(
    bench: _Bench, state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], fp16: bool, config: dict
) -> dict:
    """Write ``compressed.lthz``, read it back into the plain model, and report sizes, round trip and accuracy."""
    x, y = bench.test
    blob, entries = compress(state, mask, fp16)
    write_bytes(bench.out / "compressed.lthz", blob)
    restored = decompress(bench.out / "compressed.lthz")
    back = build_plain(config)
    back.load_state_dict(restored, strict=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return {
        "file": "compressed.lthz",
        "fp16": fp16,
        "dense_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "model_pt_bytes": len(buffer.getvalue()),
        "file_bytes": len(blob),
        "bit_identical": bit_identical(state, restored),
        "test_acc": correct(back, x, y, bench.batch_size) / len(y),
        "tensors": {n: {"encoding": e["encoding"], "bytes": e["nbytes"]} for n, e in entries.items()},
    }


def _shrunk(bench: _Bench, plain: nn.Module) -> tuple[dict, nn.Module]:
    """Write ``shrunk.pt`` where ``plain`` shrinks, checked against it; the report and the runtime model (the shrunk
    one, or ``plain`` where it does not shrink)."""
    try:
        small, units = shrink(as_chain(plain))
    except NotShrinkable as reason:
        return {"skipped": str(reason)}, plain
    report = _checked_smaller(bench, plain, small, units)
    save_tensors(bench.out / "shrunk.pt", {"layers": chain_spec(small), "state_dict": small.state_dict()})
    return {"file": "shrunk.pt", **report}, small


def _checked_smaller(bench: _Bench, plain: nn.Module, small: nn.Module, units: object) -> dict:
    """The report of a smaller model ``small`` cut from ``plain``: its outputs must equal ``plain``'s on the test
    set (else RuntimeError, nothing written), its parameters, largest difference and test accuracy."""
    x, y = bench.test
    reference, outputs = predict(plain, x, bench.batch_size), predict(small, x, bench.batch_size)
    if not torch.allclose(outputs, reference, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"the shrunk model differs from the masked one by {(outputs - reference).abs().max()}")
    return {
        "units": units,
        "parameters": [sum(p.numel() for p in m.parameters()) for m in (plain, small)],
        "max_abs_diff": float((outputs - reference).abs().max()),
        "test_acc": int((outputs.argmax(1) == y).sum()) / len(y),
    }


def _channels(
    bench: _Bench, plain: nn.Module, cfg: RunConfig, groups: list[ChannelGroup], mask: Mask
) -> tuple[dict, nn.Module]:
    """Write ``shrunk.pt2``, the channel ticket without its removed channels, checked against the masked model;
    the report and the runtime model (the smaller one)."""
    small, units = remove_channels(plain, groups, mask, example_input(cfg))
    report = _checked_smaller(bench, plain, small, units)
    write_program(small, example_input(cfg, 2), bench.out / "shrunk.pt2")
    x, _ = bench.test
    program = torch.export.load(bench.out / "shrunk.pt2").module()  # as users load it (no .eval(): exported so)
    with torch.no_grad():
        shipped = torch.cat([program(x[i : i + bench.batch_size]) for i in range(0, len(x), bench.batch_size)])
    reference = predict(plain, x, bench.batch_size)
    if not torch.allclose(shipped, reference, rtol=1e-4, atol=1e-4):  # BatchNorms folded: float rounding only
        raise RuntimeError(f"shrunk.pt2 differs from the masked model by {(shipped - reference).abs().max()}")
    return {"file": "shrunk.pt2", **report, "file_max_abs_diff": float((shipped - reference).abs().max())}, small


def _onnx(bench: _Bench, runtime: nn.Module) -> dict:
    """Write ``model.onnx`` (the runtime model), run it in onnxruntime on the test set and compare with torch."""
    x, y = bench.test
    path = bench.out / "model.onnx"
    outcome = write_onnx(runtime, x[:2], path)
    if not outcome.startswith("written"):
        return {"skipped": outcome}
    reference, outputs = predict(runtime, x, bench.batch_size), onnx_outputs(path, x, bench.batch_size)
    if not torch.allclose(outputs, reference, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"onnxruntime's outputs differ from torch's by {(outputs - reference).abs().max()}")
    return {
        "file": "model.onnx",
        "written": outcome,
        "bytes": path.stat().st_size,
        "max_abs_diff": float((outputs - reference).abs().max()),
        "test_acc": int((outputs.argmax(1) == y).sum()) / len(y),
    }


def _round_files(
    run_dir: Path, cfg: RunConfig, rows: list[dict], options: ExportOptions
) -> tuple[int, RoundFiles, Path]:
    """The round ``options`` ask for (or choose), its files and the folder its export goes to; a round the run
    lacks, or an output folder that is a file, is a :class:`~lth.core.errors.ConfigError`."""
    chosen = choose_round(rows, options.tolerance) if options.round_index is None else options.round_index
    by_round = {r["round"]: r for r in rows}
    if chosen not in by_round:
        rounds = ", ".join(str(r) for r in by_round)
        raise ConfigError("round", f"got {chosen}; {run_dir / 'rounds.csv'} has rounds {rounds}")
    files = load_round(run_dir, cfg, by_round[chosen])
    out = Path(options.out_dir) if options.out_dir is not None else run_dir / "export" / f"round_{chosen:02d}"
    if out.exists() and not out.is_dir():
        raise ConfigError("out_dir", f"{out} is a file; allowed: a folder (made if missing)")
    return chosen, files, out


def _test(bench: _Bench, plain: nn.Module, recorded: float) -> dict:
    """The test accuracy of the exported ``plain`` model, evaluated afresh, against ``recorded`` in ``rounds.csv``."""
    x, y = bench.test
    right = correct(plain, x, y, bench.batch_size)
    return {
        "images": len(y),
        "acc": right / len(y),
        "rounds_csv_acc": recorded,
        "matches_rounds_csv": round(recorded * len(y)) == right,
    }


def _runtime(bench: _Bench, runtime: nn.Module, cfg: RunConfig, gap: str | None) -> dict:
    """The report of the runtime model: its semi-structured sparsity (groups of M; not tried where the mask has a
    ``gap`` in that structure), its per-layer paths, its ONNX."""
    x = bench.test[0]
    report = {}
    if cfg.prune.grain.has(GROUPS_OF_M):
        grain = cfg.prune.granularity
        report["semi_structured"] = (
            semi_structured(runtime, grain, x[:64]) if gap is None else f"not used: the mask is not {grain} ({gap})"
        )
    report["runtime"] = {f"batch_{n}": pick_paths(runtime, x[:n])[1] for n in BENCH_BATCHES}
    report["onnx"] = _onnx(bench, runtime)
    return report


def export(run_dir: str | Path, options: ExportOptions | None = None) -> dict:
    """Export one round of the run in ``run_dir`` as ``options`` (:class:`ExportOptions`, its defaults if None)
    say; return the report also written to ``<out_dir>/export.json``.

    Everything is read and checked before anything is written; the files are written under the output folder's
    export lock (:func:`~lth.tools.export.files.export_lock`: a second export of the same folder waits for the first).
    """
    options = ExportOptions() if options is None else options
    run_dir = Path(run_dir)
    cfg, rows = read_config_and_rounds(run_dir)
    chosen, files, out = _round_files(run_dir, cfg, rows, options)
    x, y = read_test_split(cfg, options.data_dir)  # before anything is written: a missing test set writes nothing
    bench = _Bench(out, (x, y), cfg.train.eval_batch_size)
    report: dict = {
        "run_dir": str(run_dir),
        "round": chosen,
        "chosen_by": "--round"
        if options.round_index is not None
        else f"sparsest round with validation accuracy within {options.tolerance} points of round 0's",
        "weights_remaining": files.row["weights_remaining"],
        "out_dir": str(out),
    }
    with export_lock(out):
        report.update(_write_files(bench, cfg, files, options))
        write_json(out / "export.json", report)
    return report


def _structure(cfg: RunConfig, gap: str | None) -> str:
    """For a channel or n:m run, what the export did with a round whose mask has a ``gap`` in that structure (a run
    started from a weight mask with ``prune.mask_from``, a round before an n:m run's last), in one line."""
    grain = cfg.prune.granularity
    if gap is None:
        return f"the mask is {grain} throughout"
    source = f"; round 0 started from prune.mask_from={cfg.prune.mask_from}" if cfg.prune.mask_from else ""
    if grain.kind == "channel":
        did = "shrunk.pt2 removes whole channels only and keeps those weights, as zeros"
    else:
        did = f"the {grain} kernels are not used for it; model.pt is the masked dense model"
    return f"not {grain} throughout: {gap}{source}; {did}"


def _write_files(bench: _Bench, cfg: RunConfig, files: RoundFiles, options: ExportOptions) -> dict:
    """Write the files of the export into ``bench.out``; their part of the report."""
    out, config, report = bench.out, model_config(cfg), {}
    channels = cfg.prune.grain.has(WHOLE_CHANNELS)
    groups = groups_of(build_plain(config), cfg) if channels else []
    structured = channels or cfg.prune.grain.has(GROUPS_OF_M)
    gap = structure(files.mask, cfg.prune.granularity, groups) if structured else None
    if structured:
        report["structure"] = _structure(cfg, gap)
    if groups and files.rewind is not None:
        files.rewind = fold_channels(files.rewind, groups, files.mask)
    report["ticket"] = write_ticket(out, files, cfg, config)
    plain, state = write_model(out, files, config)
    report["safetensors"] = write_safetensors(out, state)
    asked = options.format == "torch-prune"
    report["torch_prune"] = write_torch_prune(out, state, files.mask) if asked else "not asked (--format torch-prune)"
    report["test"] = _test(bench, plain, files.row["test_acc"])
    report["compressed"] = _compressed(bench, state, files.mask, options.fp16, config)
    if channels:
        report["shrunk"], runtime = _channels(bench, plain, cfg, groups, files.mask)
    else:
        report["shrunk"], runtime = _shrunk(bench, plain)
    report.update(_runtime(bench, runtime, cfg, gap))
    return report


def summary(report: dict) -> str:
    """The lines the export prints for people."""
    test, packed, shrunk = report["test"], report["compressed"], report["shrunk"]
    check = "matches rounds.csv" if test["matches_rounds_csv"] else f"rounds.csv says {test['rounds_csv_acc']:.2%}"
    trip = "bit-identical" if packed["bit_identical"] else "not bit-identical"
    trip = "values rounded to fp16" if packed["fp16"] else trip
    lines = [
        f"round {report['round']} ({report['chosen_by']}): {100 * report['weights_remaining']:.1f}% weights remaining",
        f"test accuracy of the exported model, evaluated afresh: {100 * test['acc']:.2f}% "
        f"on {test['images']} images ({check})",
        f"ticket: {report['ticket']}",
        f"safetensors: {report['safetensors']}; torch-prune: {report['torch_prune']}",
        f"sizes: dense {packed['dense_bytes']:,} B, model.pt {packed['model_pt_bytes']:,} B, compressed "
        f"{packed['file_bytes']:,} B ({packed['dense_bytes'] / packed['file_bytes']:.1f}x smaller than dense"
        f"{', fp16 values' if packed['fp16'] else ''}); round trip {trip}, test accuracy {packed['test_acc']:.2%}",
    ]
    if "structure" in report:
        lines.append(f"structure: {report['structure']}")
    if "skipped" in shrunk:
        lines.append(f"shrunk: skipped: {shrunk['skipped']}")
    else:
        layers = ", ".join(f"{n} {a}->{b}" for n, (a, b) in shrunk["units"].items())
        lines.append(
            f"shrunk ({shrunk['file']}): units {layers}; "
            f"parameters {shrunk['parameters'][0]:,} -> {shrunk['parameters'][1]:,}; "
            f"outputs within {shrunk['max_abs_diff']:.1e} of the masked model, test accuracy "
            f"{100 * shrunk['test_acc']:.2f}%"
        )
    for batch, choices in report["runtime"].items():
        picks = ", ".join(f"{c['layer']} {c['path']} ({c['dense_us']:.0f}/{c['csr_us']:.0f} us)" for c in choices)
        picks = f"{picks} (dense/CSR time per call)" if picks else "no Linear layer on vectors"
        lines.append(f"runtime path, {batch.replace('_', ' ')}: {picks}")
    if "semi_structured" in report:
        lines.append(f"semi-structured: {report['semi_structured']}")
    onnx = report["onnx"]
    if "skipped" in onnx:
        lines.append(f"onnx: {onnx['skipped']}")
    else:
        lines.append(
            f"onnx: {onnx['written']} ({onnx['bytes']:,} B); onnxruntime's outputs within {onnx['max_abs_diff']:.1e} "
            f"of torch's, test accuracy {100 * onnx['test_acc']:.2f}%"
        )
    lines.append(f"written to {report['out_dir']}")
    return "\n".join(lines)
