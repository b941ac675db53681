"""``edgetl extract --out FEATURES`` where FEATURES is a local folder or a
pyarrow.fs URI: row groups of ROW_GROUP_ROWS rows, the same values either
way, float16 storage rounded from the float32 features, a URI's
manifest.json written last (no manifest: not written), an earlier export
refused without --overwrite, a bad or unreachable location refused in one
line; and a real S3 round trip against moto's server."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the 'ray' extra (pip install 'edgetl[ray]'); part of the 'test' extra")
import pyarrow.fs as pafs  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from clitools import one_line_refusal  # noqa: E402
from conftest import make_shapes_folder  # noqa: E402
from edgetl.cli import main  # noqa: E402
from edgetl.features.parquet import read_manifest  # noqa: E402
from edgetl.training import features_export  # noqa: E402

NUM_IMAGES = 24  # 3 classes x 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_shapes_folder(tmp_path_factory.mktemp("locations") / "shapes", num_per_class=8, size=32)


def _settings(data) -> list[str]:
    return ["extract", data, "--image-size", "32", "--search", "off", "--tap", "final", "--engine", "local"]


def _extract(data, out, *flags) -> None:
    assert main([*_settings(data), "--out", str(out), *flags]) == 0


def _features(path) -> np.ndarray:
    column = pq.read_table(path).column("features").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1)


def _cached(path) -> np.ndarray:
    """The cache's rows for the file's keys, cut to its (pinned) tap."""
    from edgetl.features.cache import FeatureCache

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"edgetl"])
    keys = [bytes.fromhex(k) for k in table.column("key").to_pylist()]
    cached = FeatureCache(os.path.join(os.environ["EDGETL_CACHE_DIR"], "features", meta["graph_key"])).get(keys)
    return cached[:, -table.schema.field("features").type.list_size:]


def test_a_local_folder_is_written_in_row_groups_of_the_cache_s_values(data, tmp_path, monkeypatch):
    monkeypatch.setattr(features_export, "ROW_GROUP_ROWS", 10)
    _extract(data, tmp_path / "feats")
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert manifest["data_dir"] == os.path.abspath(data) and manifest["backbone"] == "efficientnet_lite0"
    assert manifest["row_group_rows"] == 10 and manifest["feature_dtype"] == "float32"
    for entry in manifest["files"]:
        path = tmp_path / "feats" / entry["file"]
        md = pq.ParquetFile(path).metadata
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [10, 10, 4]
        feats = _features(path)
        assert entry["rows"] == NUM_IMAGES and feats.shape == (NUM_IMAGES, entry["dim"]) and feats.dtype == np.float32
        assert np.array_equal(feats, _cached(path))
        table = pq.read_table(path)
        assert set(table.column("label").to_pylist()) == {"disc", "bars", "checker"}
        assert all(p.split("/")[0] == label for p, label in zip(table.column("path").to_pylist(),
                                                                table.column("label").to_pylist()))


def test_a_file_uri_gets_the_files_then_the_manifest_and_is_not_replaced_without_overwrite(data, tmp_path,
                                                                                          monkeypatch, capsys):
    real_put, seen = features_export._put, []

    def put(fs, path, payload):  # the manifest: only once every Parquet file it lists is there
        listed = [f["file"] for f in json.loads(payload)["files"]]
        seen.append(sorted(os.listdir(tmp_path / "feats")))
        assert all((tmp_path / "feats" / name).is_file() for name in listed)
        assert not (tmp_path / "feats" / "manifest.json").exists()
        real_put(fs, path, payload)

    monkeypatch.setattr(features_export, "_put", put)
    uri = f"file://{tmp_path}/feats"
    _extract(data, uri)
    assert seen == [["features-224px.parquet", "features-32px.parquet"]]
    manifest = read_manifest(uri)
    assert manifest == json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert sorted(os.listdir(tmp_path / "feats")) == ["features-224px.parquet", "features-32px.parquet",
                                                       "manifest.json"]
    _extract(data, tmp_path / "local")  # the same values as a local folder's
    for entry in manifest["files"]:
        a, b = tmp_path / "feats" / entry["file"], tmp_path / "local" / entry["file"]
        assert pq.read_table(a).equals(pq.read_table(b))
    capsys.readouterr()
    one_line_refusal([*_settings(data), "--out", uri], capsys, uri, "--overwrite")
    _extract(data, uri, "--overwrite")
    assert len(seen) == 2


def test_a_write_failing_midway_leaves_no_manifest(data, tmp_path, monkeypatch, capsys):
    uri = f"file://{tmp_path}/feats"
    _extract(data, uri)
    monkeypatch.setattr(features_export, "ROW_GROUP_ROWS", 10)
    real, calls = features_export._record_batch, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # the second file's second row group
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(features_export, "_record_batch", failing)
    capsys.readouterr()
    assert main([*_settings(data), "--out", uri, "--overwrite"]) == 2
    err = capsys.readouterr().err  # the extraction's progress lines, then the one line of the error
    errors = [line for line in err.splitlines() if line.startswith("edgetl: error: ")]
    assert len(errors) == 1 and "Traceback" not in err and err.strip().splitlines()[-1] == errors[0], err
    for needle in (uri, "No space left on device", "no manifest.json"):
        assert needle in errors[0], (needle, errors[0])
    assert os.listdir(tmp_path / "feats") == []  # the earlier export removed first, what this one wrote after
    with pytest.raises(features_export.DataError, match="no manifest.json"):
        read_manifest(uri)


def test_float16_is_the_float32_features_rounded_in_smaller_files(data, tmp_path):
    _extract(data, tmp_path / "f32")
    _extract(data, f"file://{tmp_path}/f16", "--feature-dtype", "float16")
    manifest = json.loads((tmp_path / "f16" / "manifest.json").read_text())
    assert manifest["feature_dtype"] == "float16"
    for entry in manifest["files"]:
        a, b = tmp_path / "f32" / entry["file"], tmp_path / "f16" / entry["file"]
        schema = pq.read_schema(b)
        assert schema.field("features").type == pa.list_(pa.float16(), entry["dim"])
        assert json.loads(schema.metadata[b"edgetl"])["feature_dtype"] == "float16"
        half = _features(b)
        assert half.dtype == np.float16 and np.array_equal(half, np.float16(_features(a)))
        assert os.path.getsize(b) < os.path.getsize(a)


@pytest.mark.parametrize("out, needles", [
    ("nosuch://bucket/feats", ["nosuch://bucket/feats", "check the URI"]),
    pytest.param("s3://bucket/feats?endpoint_override=127.0.0.1:1&scheme=http&region=us-east-1",
                 ["Cannot reach", "127.0.0.1:1", "credentials"],
                 marks=pytest.mark.slow),  # ~6 s of the AWS SDK's retries: the full suite
])
def test_a_bad_or_unreachable_location_is_one_line_before_any_work(out, needles, data, monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(features_export, "_extract", lambda *a: pytest.fail("extracted before checking --out"))
    one_line_refusal([*_settings(data), "--out", out], capsys, *needles)


@pytest.fixture
def s3(monkeypatch):
    """A bucket on moto's S3 server (in this process, a free port), dummy credentials."""
    server_mod = pytest.importorskip("moto.server", reason="moto[server]: part of the 'test' extra")

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"{host}:{port}"
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                               allow_bucket_creation=True)
        fs.create_dir("edgetl-test")
        yield fs, f"endpoint_override={endpoint}&scheme=http&region=us-east-1"
    finally:
        server.stop()


@pytest.mark.slow  # moto's server, four extracts and two trainings: the full suite
def test_an_s3_prefix_round_trips(data, tmp_path, s3, capsys):
    fs, query = s3
    uri = f"s3://edgetl-test/runs/feats?{query}"
    _extract(data, uri, "--feature-dtype", "float16")
    manifest = read_manifest(uri)
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector("edgetl-test/runs/feats")))
    assert names == ["features-224px.parquet", "features-32px.parquet", "manifest.json"]
    _extract(data, tmp_path / "local", "--feature-dtype", "float16")
    for entry in manifest["files"]:
        table = pq.read_table(f"edgetl-test/runs/feats/{entry['file']}", filesystem=fs)
        assert table.num_rows == entry["rows"] == NUM_IMAGES
        assert table.equals(pq.read_table(tmp_path / "local" / entry["file"]))
    # 'edgetl train' streams the head from the bucket as from the local folder: the same head.
    from safetensors.numpy import load_file

    for where, run in ((uri, "from-s3"), (tmp_path / "local", "from-local")):
        assert main(["train", str(where), "--out", str(tmp_path / run), "--image-size", "32"]) == 0
    heads = [load_file(str(tmp_path / run / "head.safetensors")) for run in ("from-s3", "from-local")]
    assert all(np.array_equal(heads[0][k], heads[1][k]) for k in ("weight", "bias", "mean", "scale"))
    capsys.readouterr()
    one_line_refusal([*_settings(data), "--out", uri], capsys, "already holds features", "--overwrite")
    _extract(data, uri, "--overwrite")
    assert read_manifest(uri)["feature_dtype"] == "float32"
