"""The bad-input corpus (issue 12): every case is generated here (no committed binaries) and run through
the real command line, ``benchmark.cli.main``. Each case has its expected exit code and the phrases its
message must contain, the offending file's name wherever there is one. No case may end in a traceback.

Kinds: broken data that used to pass as "missing", unusable ``--out``, corrupt/odd files, empty option
lists, unsafe or degenerate annotations, ignored ``dataset.toml``, too few images, damaged stores.
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from benchmark.cli import main
from benchmark.profiles import get_profile
from benchmark.runner import GridConfig, Runner

RUN = ["run", "--methods", "watershed", "--ratios", "1/8", "--quiet"]


# ------------------------------------------------------------------------------- input generators
def _image(seed: int, size: int = 64) -> np.ndarray:
    return (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)


def _label(size: int = 64) -> np.ndarray:
    lab = np.zeros((size, size), np.int32)
    lab[5:20, 5:20], lab[30:50, 30:45] = 1, 2
    return lab


def folder_dataset(root: Path, n: int = 4, labels: bool = True) -> Path:
    """``root/images/img<i>.png`` (+ ``labels/img<i>.tif``): a valid folder dataset."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        Image.fromarray(_image(i)).save(root / "images" / f"img{i}.png")
        if labels:
            tifffile.imwrite(root / "labels" / f"img{i}.tif", _label())
    return root


SQUARE = [(5, 5), (20, 5), (20, 20), (5, 20)]


def aperio_xml(regions: list[list[tuple[float, float]]], doctype: str = "") -> str:
    body = "".join(
        f'<Region Id="{k}"><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in verts)
        + "</Vertices></Region>"
        for k, verts in enumerate(regions, start=1)
    )
    regions_xml = f"<Annotation><Regions>{body}</Regions></Annotation>"
    return f'<?xml version="1.0"?>{doctype}<Annotations>{regions_xml}</Annotations>'


def monuseg_test(data_root: Path, n: int = 4) -> Path:
    """``data_root/monuseg/MoNuSegTestData/<stem>.tif + <stem>.xml`` (images and XML side by side)."""
    part = data_root / "monuseg" / "MoNuSegTestData"
    part.mkdir(parents=True)
    for i in range(n):
        tifffile.imwrite(part / f"t{i}.tif", _image(i))
        (part / f"t{i}.xml").write_text(aperio_xml([SQUARE, [(30, 30), (45, 30), (45, 50), (30, 50)]]))
    return part


def monuseg_argv(data_root: Path, out: Path) -> list[str]:
    return [*RUN, "--datasets", "monuseg-test", "--data-root", str(data_root), "--out", str(out), "--dry-run"]


def folder_argv(root: Path, out: Path, *extra: str) -> list[str]:
    return [*RUN, "--datasets", f"folder:{root}", "--out", str(out), "--dry-run", *extra]


# ------------------------------------------------------------------------------- the cases
Case = Callable[[Path, Path], tuple[list[str], list[str]]]  # (tmp, store) -> (argv, phrases)
CASES: dict[str, tuple[int, Case]] = {}


def case(name: str, code: int = 2):
    def register(fn: Case) -> Case:
        CASES[name] = (code, fn)
        return fn
    return register


@case("duplicate-stem-png-tif")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    Image.fromarray(_image(9)).save(root / "images" / "img0.tif")
    return folder_argv(root, tmp / "o"), ["img0.png", "img0.tif", "share the name", "cannot be used"]


@case("duplicate-stem-upper-case")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    Image.fromarray(_image(9)).save(root / "images" / "img1.PNG", format="PNG")
    return folder_argv(root, tmp / "o"), ["img1.PNG", "cannot be used"]


@case("label-without-image")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    tifffile.imwrite(root / "labels" / "zz.tif", _label())
    return folder_argv(root, tmp / "o"), ["zz.tif", "without a matching image", "cannot be used"]


@case("orphan-xml")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "zz.xml").write_text(aperio_xml([SQUARE]))
    return monuseg_argv(tmp / "data", tmp / "o"), ["zz.xml", "without a matching image", "cannot be used"]


@case("xml-beside-xml-gz")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "t0.xml.gz").write_bytes(gzip.compress((part / "t0.xml").read_bytes()))
    return monuseg_argv(tmp / "data", tmp / "o"), ["t0.xml.gz", "t0.xml", "cannot be used"]


@case("corrupt-xml-gz")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    blob = bytearray(gzip.compress((part / "t1.xml").read_bytes() * 20))
    blob[15:40] = b"\xff" * 25  # valid gzip header, broken deflate stream
    (part / "t1.xml").unlink()
    (part / "t1.xml.gz").write_bytes(bytes(blob))
    return monuseg_argv(tmp / "data", tmp / "o"), ["t1.xml.gz", "corrupt"]


@case("doctype-without-entities")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "t2.xml").write_text(aperio_xml([SQUARE], doctype="<!DOCTYPE Annotations>"))
    return monuseg_argv(tmp / "data", tmp / "o"), ["t2.xml", "DTD"]


@case("nan-vertex")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "t0.xml").write_text(aperio_xml([SQUARE, [(1, 1), ("nan", 4), (9, 9)]]))
    return monuseg_argv(tmp / "data", tmp / "o"), ["t0.xml", "Region Id=2", "NaN"]


@case("far-negative-polygon")
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "t3.xml").write_text(aperio_xml([SQUARE, [(-900, -900), (-850, -900), (-850, -850), (-900, -850)]]))
    return monuseg_argv(tmp / "data", tmp / "o"), ["t3.xml", "Id=2", "mostly outside"]


@case("all-regions-degenerate-warns", code=0)
def _(tmp, store):
    part = monuseg_test(tmp / "data", n=5)
    (part / "t4.xml").write_text(aperio_xml([[(1, 1), (5, 5)], [(9, 9)]]))
    return monuseg_argv(tmp / "data", tmp / "o"), ["warning:", "t4.xml", "EMPTY"]


@case("some-regions-degenerate-warns", code=0)
def _(tmp, store):
    part = monuseg_test(tmp / "data")
    (part / "t1.xml").write_text(aperio_xml([SQUARE, [(1, 1), (5, 5)]]))
    return monuseg_argv(tmp / "data", tmp / "o"), ["warning:", "t1.xml", "Id=2", "dropped"]


@case("non-utf8-file-name")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    with open(os.fsencode(root / "images") + b"/b\xffad.png", "wb") as fh:
        Image.fromarray(_image(7)).save(fh, format="PNG")
    return folder_argv(root, tmp / "o"), ["\\xffad.png", "not valid UTF-8"]


@case("truncated-png")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    p = root / "images" / "img2.png"
    p.write_bytes(p.read_bytes()[:200])
    return folder_argv(root, tmp / "o"), ["img2.png", "cannot read image"]


@case("label-shape-mismatch")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    tifffile.imwrite(root / "labels" / "img3.tif", _label(32))
    return folder_argv(root, tmp / "o"), ["img3.tif", "32x32"]


@case("broken-dataset-toml-beside")
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    (root / "dataset.toml").write_text('name = "x\n')
    return folder_argv(root, tmp / "o"), ["dataset.toml", "invalid TOML"]


@case("dataset-toml-beside-is-read", code=0)
def _(tmp, store):
    root = folder_dataset(tmp / "d")
    (root / "images").rename(root / "imgs")
    (root / "dataset.toml").write_text('name = "Lab Nuclei"\nimages = "imgs"\n')
    return folder_argv(root, tmp / "o"), ["folder-lab-nuclei"]


@case("too-few-annotated-images")
def _(tmp, store):
    root = folder_dataset(tmp / "few", n=2)
    return folder_argv(root, tmp / "o"), ["needs at least 3 annotated images", "has only 2", str(root)]


@case("no-annotated-images")
def _(tmp, store):
    root = folder_dataset(tmp / "none", n=3, labels=False)
    return folder_argv(root, tmp / "o"), ["needs at least 3", "has only 0"]


@case("splits-show-uses-the-run-name", code=0)
def _(tmp, store):
    root = folder_dataset(tmp / "Mine")
    return ["splits", "show", "--dataset", f"folder:{root}"], ["folder-mine"]


@case("out-is-a-file")
def _(tmp, store):
    (tmp / "f").write_text("x")
    return [*RUN, "--datasets", "synthetic", "--out", str(tmp / "f")], ["--out", str(tmp / "f"), "is a file"]


@case("out-under-a-file")
def _(tmp, store):
    (tmp / "f").write_text("x")
    return [*RUN, "--datasets", "synthetic", "--out", str(tmp / "f" / "s")], [str(tmp / "f"), "which is a file"]


@case("out-unwritable")
def _(tmp, store):
    target = _unwritable(tmp)
    return [*RUN, "--datasets", "synthetic", "--out", str(target)], ["--out", str(target), "cannot write"]


def _unwritable(tmp: Path) -> Path:
    if os.geteuid() == 0:  # root ignores modes; sysfs refuses even root
        return Path("/sys/nuclei-ssl-bench-out")
    (tmp / "ro").mkdir(mode=0o500)
    return tmp / "ro" / "x"


@case("report-dir-unwritable")
def _(tmp, store):
    target = _unwritable(tmp)
    return ["report", "--results", str(store), "--out", str(target), "--no-figures"], [str(target)]


@case("splits-make-out-unwritable")
def _(tmp, store):
    target = _unwritable(tmp) / "m.json"
    return ["splits", "make", "--dataset", "synthetic", "--out", str(target)], [str(target.parent)]


for _opt in ("--seeds", "--ratios", "--methods", "--datasets"):
    def _empty(tmp, store, opt=_opt):
        argv = [*RUN, "--datasets", "synthetic", "--out", str(tmp / "o"), "--dry-run"]
        if opt in argv:
            argv[argv.index(opt) + 1] = ","
        else:
            argv += [opt, ","]
        return argv, ["no values given", opt]
    case(f"empty{_opt}")(_empty)


@case("empty-sweep")
def _(tmp, store):
    return ([*RUN, "--datasets", "synthetic", "--out", str(tmp / "o"), "--dry-run", "--sweep",
             "watershed.min_distance="], ["no values given", "--sweep"])


def _damaged(store: Path, name: str, cut: Callable[[bytes], bytes]) -> Path:
    (cell,) = [p.parent for p in store.glob("*/*/*/*/done.json")]
    (cell / name).write_bytes(cut((cell / name).read_bytes()))
    return cell / name


@case("report-truncated-metrics-csv")
def _(tmp, store):
    _damaged(store, "metrics_patch.csv", lambda b: b"".join(b.splitlines(keepends=True)[:20]))
    return ["report", "--results", str(store), "--no-figures"], ["metrics_patch.csv", "--skip-damaged"]


@case("report-metrics-csv-cut-mid-line")
def _(tmp, store):
    _damaged(store, "metrics_image.csv", lambda b: b[: len(b) // 2])
    return ["report", "--results", str(store), "--no-figures"], ["metrics_image.csv"]


@case("report-truncated-cell-json")
def _(tmp, store):
    _damaged(store, "cell.json", lambda b: b[:40])
    return ["report", "--results", str(store), "--no-figures"], ["cell.json"]


@case("report-garbage-done-json")
def _(tmp, store):
    _damaged(store, "done.json", lambda b: b"{'summary': ")
    return ["report", "--results", str(store), "--no-figures"], ["done.json", "JSON"]


@case("report-corrupt-predictions-npz")
def _(tmp, store):
    _damaged(store, "predictions.npz", lambda b: b[:100] + b"\0" * 50 + b[150:])
    return ["report", "--results", str(store)], ["predictions.npz"]


@case("report-corrupt-examples-npz")
def _(tmp, store):
    _damaged(store, "examples.npz", lambda b: b"PK\x03\x04garbage")
    return ["report", "--results", str(store)], ["examples.npz"]


@case("report-skip-damaged-warns", code=0)
def _(tmp, store):
    _damaged(store, "metrics_patch.csv", lambda b: b"".join(b.splitlines(keepends=True)[:20]))
    return (["report", "--results", str(store), "--no-figures", "--skip-damaged"],
            ["warning: skipping damaged cell", "metrics_patch.csv"])


@case("verify-damaged-store", code=1)
def _(tmp, store):
    _damaged(store, "env.json", lambda b: b + b" ")
    return ["verify", "--out", str(store)], ["DAMAGED", "env.json", "1 damaged"]


@case("verify-missing-store")
def _(tmp, store):
    return ["verify", "--out", str(tmp / "nothing")], ["--out", str(tmp / "nothing")]


@case("report-missing-store")
def _(tmp, store):
    return ["report", "--results", str(tmp / "nothing")], [str(tmp / "nothing"), "does not exist"]


# ------------------------------------------------------------------------------- fixtures and test
@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NUCLEI_SSL_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "patch-cache"))


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    """One real watershed cell on synthetic 1/8, written by the runner."""
    out = tmp_path_factory.mktemp("corpus-store") / "results"
    cfg = GridConfig(methods=["watershed"], datasets=["synthetic"], ratios=["1/8"], seeds=[0],
                     profile=get_profile("smoke"), out=out, progress=False)
    assert Runner(cfg, echo=lambda m: None).run() == 0
    return out


@pytest.fixture
def bad_input(request, tmp_path, real_store):
    """Generate the named case's inputs under ``tmp_path``; returns ``(code, argv, phrases)``."""
    code, build = CASES[request.param]
    store = tmp_path / "results"
    shutil.copytree(real_store, store)
    argv, phrases = build(tmp_path, store)
    yield code, argv, phrases
    for p in tmp_path.rglob("*"):  # let pytest clean read-only folders
        if p.is_dir():
            p.chmod(0o700)


@pytest.mark.parametrize("bad_input", sorted(CASES), indirect=True)
def test_bad_input_gets_a_clear_error(bad_input, capsys):
    code, argv, phrases = bad_input
    rc = main(argv)
    cap = capsys.readouterr()
    text = cap.err + cap.out
    assert "Traceback" not in text
    assert "dataset(s) missing" not in text, "data that is present but broken must say why"
    assert rc == code, text[-2000:]
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text[-2000:]}"


def test_the_corpus_covers_every_kind():
    kinds = {"duplicate", "orphan", "corrupt", "doctype", "nan", "degenerate", "utf8", "toml", "too-few",
             "splits-show", "out-", "empty", "report-", "verify-"}
    assert all(any(k in name for name in CASES) for k in kinds)
