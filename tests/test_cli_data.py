"""hipnet-data end to end on a tiny manifest: generate, resume, picture, clear errors."""

import yaml
from click.testing import CliRunner

from conftest import tiny_manifest
from hipnet.cli.data import main
from hipnet.pipeline.readers.anny import AnnyReader


def test_anny_command_generates_a_dataset_and_a_picture(tmp_path, lowpoly_body):
    manifest = tmp_path / "tiny.yaml"
    manifest.write_text(yaml.safe_dump(tiny_manifest()))
    out, png = tmp_path / "raw", tmp_path / "grid.png"
    runner = CliRunner()
    result = runner.invoke(main, ["anny", "--out", str(out), "--manifest", str(manifest), "--png", str(png)])
    assert result.exit_code == 0, result.output
    reader = AnnyReader(out)
    assert reader.info.frames == sum(tiny_manifest()["expected"]["frames"].values())
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    # a finished dataset is recognised on rerun; a different manifest into the same folder is refused
    again = runner.invoke(main, ["anny", "--out", str(out), "--manifest", str(manifest)])
    assert again.exit_code == 0, again.output
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_manifest(seed=3)))
    refused = runner.invoke(main, ["anny", "--out", str(out), "--manifest", str(other)])
    assert refused.exit_code == 1 and "different finished dataset" in refused.output


def test_preview_names_a_folder_that_is_not_a_dataset(tmp_path):
    result = CliRunner().invoke(main, ["preview", "--root", str(tmp_path), "--png", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "dataset.yaml not found" in result.output


def test_unknown_manifest_is_named(tmp_path):
    result = CliRunner().invoke(main, ["anny", "--out", str(tmp_path), "--manifest", "no_such_dataset"])
    assert result.exit_code == 1 and "no manifest 'no_such_dataset'" in result.output


def test_preprocess_frame_every_writes_the_first_frame_of_each_sequence(tmp_path, tiny_raw):
    """`make demo`'s test store: --frame-every 6 on the 6-frame sequences of the held-out split keeps frame 0 of
    each; 0 is refused before anything is written."""
    from hipnet.pipeline.store.reading import Store

    args = ["preprocess", "--dataset", "anny", "--root", str(tiny_raw), "--out", str(tmp_path), "--splits", "heldout",
            "--points", "300", "--eval-points", "300", "--geodesics", "per-template", "--workers", "1"]
    bad = CliRunner().invoke(main, [*args, "--frame-every", "0"])
    assert bad.exit_code == 2 and "--frame-every" in bad.output and not (tmp_path / "heldout.zarr").exists()
    # a quantised store chunks the samples by 2,500: another count is refused in one line, before anything is made
    odd = CliRunner().invoke(main, [*args[:10], "12000", *args[11:], "--quantise"])
    assert odd.exit_code == 1 and "Error: --points 12000 with --quantise" in odd.output and "multiple of 2500" in \
        odd.output and "Traceback" not in odd.output and not (tmp_path / "heldout.zarr").exists()
    result = CliRunner().invoke(main, [*args, "--frame-every", "6"])
    assert result.exit_code == 0, result.output
    store = Store.open(tmp_path / "heldout.zarr")
    every = AnnyReader(tiny_raw, ("heldout",)).frame_refs()
    assert [store.frame_key(i) for i in range(store.n_frames)] == [r.key for r in every if r.index == 0]
    assert store.attrs["config"]["frame_every"] == 6 and store.attrs["complete"]
