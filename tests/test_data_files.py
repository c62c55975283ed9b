"""The file-backed datasets in their real formats (MPI3D .npz, SmallNORB binary .mat, Cars3D
MATLAB .mat), each read from a small file written here in that exact format, and
``vaebench data fetch`` / ``data list`` against an HTTP server started on 127.0.0.1.

Costs (2-core machine): each loader test well under 1 s (Cars3D ~1 s: 3 cars × 96 Lanczos
resizes); each fetch test ~0.3-1 s (in-process CLI, a local threaded server); the tiny
real run on SmallNORB ~7 s."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

from vaebench.plugins.datasets.base import DatasetError, check_sample
from vaebench.plugins.datasets.catalog import SOURCES, RemoteFile, Source, read_index
from vaebench.plugins.datasets.cars3d import load_cars3d
from vaebench.plugins.datasets.fetch import fetch
from vaebench.plugins.datasets.mpi3d import MPI3D, load_mpi3d_toy
from vaebench.plugins.datasets.smallnorb import (
    CHUNKS,
    filename,
    load_smallnorb,
    read_binary_matrix,
    resize_norb,
    write_binary_matrix,
)

# --- writers of each format -------------------------------------------------------------

#: A reduced MPI3D grid: 288 rows in the published 7-factor row-major layout; the file
#: carries it as 'factor_sizes' (the published files do not; their row count names their grid).
MPI3D_SMALL = (2, 2, 2, 3, 3, 2, 2)


def write_mpi3d(path: Path, sizes=MPI3D_SMALL, with_sizes: bool = True, compressed: bool = False) -> np.ndarray:
    """Row i's image holds its factor indices in pixel (0, 0..6) of channel 0, and i % 251 in channel 1."""
    n = int(np.prod(sizes))
    factors = np.stack(np.unravel_index(np.arange(n), sizes), axis=1)
    images = np.zeros((n, 64, 64, 3), dtype=np.uint8)
    images[:, 0, :7, 0] = factors
    images[:, :, :, 1] = (np.arange(n) % 251)[:, None, None]
    arrays = {"images": images}
    if with_sizes:
        arrays["factor_sizes"] = np.asarray(sizes, dtype=np.int64)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return images


#: Reduced SmallNORB grid (category, instance, elevation, azimuth/2, lighting): 32 rows, split
#: over the training and testing chunks in a shuffled order (the published files are not sorted).
NORB_SMALL = (2, 2, 2, 2, 2)


def norb_value(features: np.ndarray) -> np.ndarray:
    """The grey level the left image of a row with these features gets (distinct per row)."""
    return 20 + 7 * np.ravel_multi_index(tuple(np.asarray(features).T), NORB_SMALL)


def write_smallnorb(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.unravel_index(np.arange(32), NORB_SMALL), axis=1)
    rows = grid[np.random.default_rng(3).permutation(32)]
    for chunk, part in zip(CHUNKS, (rows[:16], rows[16:])):
        value = norb_value(part).astype(np.uint8)
        dat = np.empty((16, 2, 96, 96), dtype=np.uint8)
        dat[:, 0] = value[:, None, None]  # left camera: constant grey
        dat[:, 1] = 255 - value[:, None, None]  # right camera
        info = np.column_stack((part[:, 1], part[:, 2], part[:, 3] * 2, part[:, 4])).astype(np.int32)
        write_binary_matrix(folder / filename(chunk, "dat"), dat)
        write_binary_matrix(folder / filename(chunk, "cat"), part[:, 0].astype(np.int32))
        write_binary_matrix(folder / filename(chunk, "info"), info)


CAR_ORDER = ("car_003_mesh", "car_001_mesh", "car_002_mesh")


def write_cars(folder: Path) -> None:
    """Three cars: im[..., 0, a, e] = 10 a + e, im[..., 1, a, e] = 50 × car number; list.txt orders them."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    for k in (1, 2, 3):
        im = np.zeros((128, 128, 3, 24, 4), dtype=np.uint8)
        im[:, :, 0] = (10 * np.arange(24)[:, None] + np.arange(4)[None, :]).astype(np.uint8)
        im[:, :, 1] = 50 * k
        scipy.io.savemat(folder / f"car_00{k}_mesh.mat", {"im": im, "mask": np.ones((128, 128, 24, 4), np.uint8)})
    (folder / "list.txt").write_text("\n".join(CAR_ORDER) + "\n", encoding="utf-8")


# --- loaders ----------------------------------------------------------------------------


def test_mpi3d_npz_is_memory_mapped_and_row_major(tmp_path):
    path = tmp_path / "mpi3d_toy.npz"
    write_mpi3d(path)
    data = load_mpi3d_toy(path)
    assert isinstance(data, MPI3D) and isinstance(data.images, np.memmap)
    assert data.factor_sizes == MPI3D_SMALL and len(data.factor_names) == 7 and data.image_shape == (64, 64, 3)
    check_sample(data, num_factors=7)
    images, factors = data.sample(50, np.random.default_rng(0))
    assert np.array_equal(np.round(images[:, 0, :7, 0] * 255).astype(int), factors)
    # a folder works, and a compressed .npz (np.savez_compressed) is extracted once beside it and mapped
    (tmp_path / "z").mkdir()
    write_mpi3d(tmp_path / "z" / "mpi3d_toy.npz", compressed=True)
    packed = load_mpi3d_toy(tmp_path / "z")
    assert isinstance(packed.images, np.memmap) and (tmp_path / "z" / "mpi3d_toy.npz.images.npy").is_file()
    assert np.array_equal(packed.observations(factors), images)


def test_mpi3d_row_count_without_grid_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    write_mpi3d(path, with_sizes=False)
    with pytest.raises(DatasetError, match="288 images .* match no MPI3D grid"):
        load_mpi3d_toy(path)


def test_smallnorb_binary_matrices(tmp_path):
    write_smallnorb(tmp_path / "small_norb")
    dat = read_binary_matrix(tmp_path / "small_norb" / filename(CHUNKS[0], "dat"))
    assert dat.shape == (16, 2, 96, 96) and dat.dtype == np.uint8
    assert read_binary_matrix(tmp_path / "small_norb" / filename(CHUNKS[0], "cat")).shape == (16,)
    data = load_smallnorb(tmp_path / "small_norb")
    assert data.factor_names == ("category", "elevation", "azimuth", "lighting") and data.factor_sizes == (2, 2, 2, 2)
    check_sample(data, num_factors=4)
    images, factors = data.sample(40, np.random.default_rng(1))
    assert images.shape == (40, 64, 64, 1)
    # each image is the left camera of a row with these factors and one of its two instances
    grey = np.round(images[:, 32, 32, 0] * 255).astype(int)
    for inst in (0, 1):
        full = np.column_stack((factors[:, 0], np.full(40, inst), factors[:, 1:]))
        grey = np.where(grey == norb_value(full), -1, grey)
    assert np.all(grey == -1), "an image matched no instance of its factors (or came from the right camera)"
    assert np.array_equal(data.observations(factors), data.observations(factors))  # same request, same images


def test_smallnorb_resize_is_disentanglement_libs(tmp_path):
    """disentanglement_lib reads the bytes as int8 and resizes PIL.Image.fromarray(...) with
    ANTIALIAS (Lanczos); the same on a random image, clipped to [0, 255]."""
    from PIL import Image

    raw = np.random.default_rng(0).integers(0, 256, size=(2, 96, 96), dtype=np.uint8)
    want = [np.clip(np.asarray(Image.fromarray(r.view(np.int8)).resize((64, 64), Image.Resampling.LANCZOS)), 0, 255)
            for r in raw]
    assert np.array_equal(resize_norb(raw), np.stack(want).astype(np.uint8))


def test_cars3d_mat_folder(tmp_path):
    write_cars(tmp_path / "cars")
    data = load_cars3d(tmp_path / "cars")
    assert data.factor_sizes == (4, 24, 3) and data.factor_names == ("elevation", "azimuth", "object_type")
    check_sample(data, num_factors=3)
    f = np.array([[0, 0, 0], [3, 23, 1], [2, 5, 2], [1, 7, 0]])
    px = np.round(data.observations(f)[:, 40, 40] * 255).astype(int)
    car_number = [int(CAR_ORDER[i][4:7]) for i in f[:, 2]]  # list.txt's order, not the names'
    assert np.array_equal(px[:, 0], 10 * f[:, 1] + f[:, 0]) and np.array_equal(px[:, 1], 50 * np.array(car_number))


def test_missing_data_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    for load, name in ((load_cars3d, "cars3d"), (load_smallnorb, "smallnorb"), (load_mpi3d_toy, "mpi3d_toy")):
        with pytest.raises(DatasetError, match=f"vaebench data fetch {name}"):
            load()


# --- fetch from a local server ----------------------------------------------------------


class Server:
    """A threaded HTTP server on 127.0.0.1 serving ``files`` (path -> bytes), honouring
    ``Range: bytes=N-`` with 206; a path in ``cut`` is served once with its full
    Content-Length but only its first half, then the connection is closed."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.cut, self.requests = files, set(), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002
                pass

            def do_GET(self):  # noqa: N802
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in outer.cut:
                    outer.cut.discard(self.path)
                    self.wfile.write(body[start:start + len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(files: dict[str, bytes]) -> Server:
        servers.append(Server(files))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_fetch_resumes_a_cut_download_then_loads(tmp_path, monkeypatch, serve, cli):
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    write_mpi3d(tmp_path / "src.npz")
    body = (tmp_path / "src.npz").read_bytes()
    name = SOURCES["mpi3d_toy"].files[0].url.rsplit("/", 1)[-1]
    server = serve({f"/mirror/{name}": body})
    server.cut.add(f"/mirror/{name}")
    first = cli("data", "fetch", "mpi3d_toy", "--url", server.url + "/mirror")
    assert first.exit_code == 1 and "run the same command again to resume" in first.output
    part = tmp_path / "data" / "mpi3d_toy" / "mpi3d_toy.npz.part"
    assert part.stat().st_size == len(body) // 2 and "mpi3d_toy" not in read_index()
    second = cli("data", "fetch", "mpi3d_toy", "--url", server.url + "/mirror")
    assert second.exit_code == 0, second.output
    assert server.requests[-1] == (f"/mirror/{name}", f"bytes={len(body) // 2}-")
    got = tmp_path / "data" / "mpi3d_toy" / "mpi3d_toy.npz"
    assert got.read_bytes() == body and not part.exists()
    assert read_index()["mpi3d_toy"]["path"] == str(got.parent.resolve())
    assert load_mpi3d_toy().factor_sizes == MPI3D_SMALL  # found through the index
    # already here: nothing downloaded again
    n = len(server.requests)
    assert cli("data", "fetch", "mpi3d_toy", "--url", server.url + "/mirror").exit_code == 0 and len(server.requests) == n


def test_fetch_sha_mismatch_keeps_nothing(tmp_path, monkeypatch, serve, cli):
    """SmallNORB's files are pinned (TFDS's sha256 and sizes): a file of the right size but other
    bytes is refused with one line, exit 1, and removed."""
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    first = SOURCES["smallnorb"].files[0]
    base = first.url.rsplit("/", 1)[-1]
    server = serve({f"/{base}": b"x" * first.size})
    result = cli("data", "fetch", "smallnorb", "--url", server.url)
    assert result.exit_code == 1
    assert "does not match the pinned" in result.output and first.sha256 in result.output
    folder = tmp_path / "data" / "small_norb"
    assert list(folder.iterdir()) == [] and "smallnorb" not in read_index()


def test_fetch_unpacks_a_tar_and_lists_it(tmp_path, monkeypatch, serve, cli):
    """Cars3D's archive layout (data/cars/*.mat beside other folders): only data/cars is kept.
    (The written archive is not the published one: the test pins its MD5 in place of disent's.)"""
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "index"))
    write_cars(tmp_path / "build" / "data" / "cars")
    (tmp_path / "build" / "data" / "shapes48.mat").write_bytes(b"other")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "build" / "data", arcname="data")
    cars = SOURCES["cars3d"]
    monkeypatch.setitem(SOURCES, "cars3d", dataclasses.replace(
        cars, files=(dataclasses.replace(cars.files[0], md5=hashlib.md5(buf.getvalue()).hexdigest()),)))
    server = serve({"/nips2015-analogy-data.tar.gz": buf.getvalue()})
    result = cli("data", "fetch", "cars3d", "--url", server.url, "--to", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "elsewhere" / "cars"
    assert sorted(p.name for p in folder.iterdir()) == ["car_001_mesh.mat", "car_002_mesh.mat", "car_003_mesh.mat", "list.txt"]
    assert load_cars3d().factor_sizes == (4, 24, 3)  # --to recorded in $VAEBENCH_DATA's index
    listed = json.loads(cli("data", "list", "--json").output)
    rows = {r["name"]: r for r in listed["datasets"]}
    assert rows["cars3d"]["present"] and rows["cars3d"]["path"] == str(folder.resolve())
    assert rows["cars3d"]["bytes"] > 0 and not rows["smallnorb"]["present"] and rows["smallnorb"]["sha256_pinned"]
    assert rows["cars3d"]["pinned"] == "md5" and rows["smallnorb"]["pinned"] == "sha256" and rows["mpi3d_toy"]["pinned"] is None


def test_fetch_md5_mismatch_keeps_nothing(tmp_path, monkeypatch, serve, cli):
    """Cars3D's archive is pinned to disent's published whole-file MD5: other bytes under its
    name are refused with one line, exit 1, and removed."""
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    server = serve({"/nips2015-analogy-data.tar.gz": b"not the archive" * 100})
    result = cli("data", "fetch", "cars3d", "--url", server.url)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # beside the progress line
    assert len(errors) == 1 and "md5" in errors[0] and SOURCES["cars3d"].files[0].md5 in errors[0], result.output
    assert list((tmp_path / "data" / "cars").iterdir()) == [] and "cars3d" not in read_index()


def test_fetch_verifies_a_pinned_gzip(tmp_path, monkeypatch, serve):
    """A pinned source (the way SmallNORB's are): the right bytes pass and are gunzipped."""
    monkeypatch.setenv("VAEBENCH_DATA", str(tmp_path / "data"))
    payload = gzip.compress(b"\x55\x4c\x3d\x1e" + bytes(20))
    server = serve({"/f.mat.gz": payload})
    source = Source("tiny", "tiny", (RemoteFile("https://example.invalid/f.mat.gz", "f.mat",
                                                hashlib.sha256(payload).hexdigest(), len(payload), "gunzip"),),
                    "test", "test", "test")
    result = fetch("tiny", to=tmp_path, base_url=server.url, source=source)
    assert (tmp_path / "tiny" / "f.mat").read_bytes()[:4] == b"\x55\x4c\x3d\x1e" and result.unverified == []
    assert not (tmp_path / "tiny" / "f.mat.gz").exists()


def test_a_run_trains_and_scores_on_smallnorb_files(tmp_path, cli):
    """The harness path end to end on a written SmallNORB: checked on a sample, trained a few
    steps, scored, recorded with the dataset's variant and digest (~6 s)."""
    write_smallnorb(tmp_path / "small_norb")
    registry = tmp_path / "reg"
    result = cli("run", "--model", "beta_vae", "--dataset", "smallnorb", "--dataset-path", tmp_path / "small_norb",
                 *TINY, "--metrics", "mig", "--registry", registry, "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["status"] == "ok" and record["dataset_variant"] == "mat"
    assert record["dataset_digest"] == load_smallnorb(tmp_path / "small_norb").digest()
    assert record["metrics"]["mig"] == record["metrics"]["mig"]  # a number, not NaN
