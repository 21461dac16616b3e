"""The ``quantgate`` command: ``ladder`` builds quant variants, ``inspect`` describes GGUFs,
``merge`` combines the JSON reports of separate jobs into one summary and one exit code,
``report`` renders a saved or merged JSON report as one self-contained HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Callable, Sequence

from .atomic import write_text
from .gguf_info import GGUFError, read_info
from .ladder import DEFAULT_TYPES, LadderError, build_ladder, resolve_source
from .constants import MB
from .merge import MergeError, merge
from .render import render_lines, render_markdown
from .report import write_document


def _types(value: str) -> tuple[str, ...]:
    types = tuple(t.strip().upper() for t in value.split(",") if t.strip())
    if not types:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as F16,Q8_0,Q4_K_M")
    return types


def _threads(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 512:  # ggml's limit (GGML_MAX_N_THREADS)
        raise argparse.ArgumentTypeError(f"expected a thread count between 1 and 512, got {value!r}")
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quantgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    lad = sub.add_parser("ladder", help="build quant variants of a GGUF with llama.cpp's quantizer")
    lad.add_argument("source", help="source GGUF path, or pkg:PACKAGE/FILE for a file shipped in a package")
    lad.add_argument("--types", type=_types, default=DEFAULT_TYPES,
                     help=f"comma-separated quant types (default: {','.join(DEFAULT_TYPES)})")
    lad.add_argument("--out", type=Path, required=True, help="output directory")
    lad.add_argument("--prefix", default=None, help="file name prefix (default: the source's stem)")
    lad.add_argument("--threads", type=_threads, default=None, help="quantizer threads (default: all cores)")
    lad.add_argument("-q", "--quiet", action="store_true",
                     help="no progress lines on stderr before each quantization")
    ins = sub.add_parser("inspect", help="print architecture, file type, size, bits/weight, params")
    ins.add_argument("paths", nargs="+", type=Path, help="GGUF files or directories")
    mer = sub.add_parser("merge", help="combine --quant-report files of separate jobs (e.g. one variant "
                                       "per CI job) into one summary; exit 0 when the gate passes, 1 "
                                       "when it fails, 2 when the reports cannot be merged")
    mer.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json", help="reports to merge")
    mer.add_argument("--out", type=Path, default=None, help="write the merged report (JSON) here")
    mer.add_argument("--markdown", type=Path, default=None,
                     help="write the summary as Markdown here, e.g. \"$GITHUB_STEP_SUMMARY\"")
    rep = sub.add_parser("report", help="render a saved (or merged) --quant-report file as one "
                                         "self-contained HTML page; exit 2 when it cannot be read")
    rep.add_argument("report", type=Path, metavar="REPORT.json", help="the JSON report")
    rep.add_argument("--html", type=Path, required=True, help="write the HTML page here")
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args.report, args.html)
    if args.command == "ladder":
        return _ladder(args)
    if args.command == "merge":
        return _merge(args)
    return _inspect(args.paths)


def _progress(line: str) -> None:
    """One whole line per step (a rung takes seconds to minutes): readable in CI logs too."""
    print(line, file=sys.stderr, flush=True)


def _ladder(args: argparse.Namespace) -> int:
    try:
        source = resolve_source(args.source)
        print(f"source: {source} ({source.stat().st_size / MB:.1f} MB)", flush=True)

        rungs = build_ladder(source, args.types, args.out, args.prefix, args.threads,
                             progress=None if args.quiet else _progress)
    except LadderError as exc:
        print(f"quantgate ladder: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the disk filled up while writing a rung
        print(f"quantgate ladder: error: {exc.filename or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for r in rungs:
        how = f"built in {r.seconds:.1f} s" if r.built else "up to date"
        print(f"{r.type:<8} {r.size_bytes / MB:8.1f} MB  {r.path}  ({how})", flush=True)
    return 0


def _merge(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"quantgate merge: error: {message}", file=sys.stderr)
        return 2

    inputs = {p.resolve() for p in args.reports}
    for flag, path in (("--out", args.out), ("--markdown", args.markdown)):
        if path is not None and path.resolve() in inputs:
            return fail(f"{flag}: {path} is one of the reports being merged")
    try:
        merged = merge(args.reports)
    except MergeError as exc:
        return fail(str(exc))
    for line in render_lines(merged.summary):
        print(line)
    writes: list[tuple[str, Path | None, Callable[[Path], None]]] = [
        ("--out", args.out, lambda p: write_document(p, merged.document)),
        ("--markdown", args.markdown, lambda p: write_text(p, render_markdown(merged.summary)))]
    for flag, path, write in writes:
        if path is None:
            continue
        try:
            write(path)
        except OSError as exc:  # a lost output must not look like a verdict: exit 2, not 0 or 1
            return fail(f"{flag}: cannot write {path}: {exc.strerror or exc}")
    return 0 if merged.passed else 1


def _report(source: Path, html: Path) -> int:
    from .html_report import write_html  # jinja2 only for this command
    from .report_check import InvalidReport, read_report, validate
    from .report_view import ReportError

    def fail(message: str) -> int:
        print(f"quantgate report: error: {message}", file=sys.stderr)
        return 2

    if html.resolve() == source.resolve():
        return fail(f"--html: {html} is the report being rendered")
    try:
        data = read_report(source)
        validate(str(source), data)  # untrusted: the checks quantgate merge makes
        write_html(html, data)
    except InvalidReport as exc:  # one line naming the file and the field
        return fail(str(exc))
    except ReportError as exc:  # what only the page reads (each call of a transcript)
        return fail(f"{source}: {exc}")
    except OSError as exc:
        return fail(f"--html: cannot write {html}: {exc.strerror or exc}")
    print(f"wrote {html}")
    return 0


def _inspect(paths: list[Path]) -> int:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.gguf") if not f.name.startswith(".")))
        elif p.exists():
            files.append(p)
        else:
            print(f"quantgate inspect: error: {p}: no such file", file=sys.stderr)
            return 2
    status = 0
    print(f"{'file':<40} {'arch':<8} {'type':<8} {'MB':>8} {'bpw':>6} {'params':>12}")
    for f in files:
        try:
            i = read_info(f)
        except GGUFError as exc:
            print(f"{f.name:<40} error: {exc}")
            status = 1
            continue
        print(f"{f.name:<40} {i.architecture:<8} {i.file_type:<8} {i.size_bytes / MB:8.1f} "
              f"{i.bits_per_weight:6.2f} {i.n_params:12,}")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
