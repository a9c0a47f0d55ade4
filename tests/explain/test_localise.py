"""Localisation scores, box mapping through pad/resize, the lattice factor, Grad-CAM layers, the explain API."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kdcore.cli import main
from kdcore.data.imageio import square_resize
from kdcore.errors import KDCoreError
from kdcore.explain import METHODS, Frame, explain, explain_image, lattice_factor, layout_floor, lrp_map
from kdcore.explain.gradcam import LAYERS, upsample_cam
from kdcore.explain.localise import bootstrap, box_mask, find_boxed_images, image_scores, localise, peak
from kdcore.models import load_model
from tests.helpers import CLASSES


@pytest.mark.parametrize("height,width", [(200, 300), (300, 200), (256, 256), (37, 91)])
def test_frame_round_trips_and_matches_square_resize(height, width):
    frame = Frame(height, width, 64)
    box = np.array([0.2 * width, 0.3 * height, 0.7 * width, 0.9 * height])
    assert np.allclose(frame.box_to_upload(frame.box_to_input(box)), box)
    xy = np.random.default_rng(0).random((10, 2)) * 64
    assert np.allclose(frame.to_input(frame.to_upload(xy)), xy)
    grey = np.zeros((height, width), np.float32)
    x0, y0, x1, y1 = box.round().astype(int)
    grey[y0:y1, x0:x1] = 1.0
    pixels = square_resize(grey, 64)
    ys, xs = np.nonzero(pixels > 127)
    mapped = frame.box_to_input([x0, y0, x1, y1])
    assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], mapped, atol=1.0)


def test_pointing_energy_and_ties():
    mask = box_mask(np.array([10.0, 20.0, 30.0, 40.0]), 64)
    assert mask[20, 10] and mask[39, 29] and not mask[40, 29] and not mask[19, 10]
    head = np.zeros((64, 64), np.uint8)  # a head in the left half, black background on the right
    head[:, :32] = 200
    inside = np.zeros((64, 64))
    inside[25, 15] = 2.0
    scores = image_scores(inside, mask, mask, head)
    assert scores["pointing_game"] == 1.0 and scores["energy_in_box"] == 1.0 and scores["ties"] == 1.0
    assert scores["energy_on_background"] == 0.0 and scores["uniform_energy_on_background"] == 0.5
    outside = -np.ones((64, 64))
    outside[5, 50] = 1.0
    scores = image_scores(outside, mask, mask, head)
    assert scores["pointing_game"] == 0.0 and scores["energy_on_background"] == 1.0  # negative relevance not counted
    flat = np.ones((64, 64))
    assert peak(flat) == (0, 0, 64 * 64)  # ties broken at the first pixel in row-major order, all counted
    scores = image_scores(flat, mask, mask, head)
    assert scores["ties"] == 64 * 64 and scores["pointing_game"] == 0.0
    assert scores["uniform_pointing_game"] == pytest.approx(mask.mean()) == pytest.approx(scores["energy_in_box"])
    assert scores["energy_on_background"] == scores["uniform_energy_on_background"] == 0.5
    assert scores["centre_pointing_game"] == 0.0  # the centre pixel (32, 32) lies right of x = 30
    assert image_scores(flat, box_mask(np.array([20.0, 20.0, 40.0, 40.0]), 64), mask,
                        head)["centre_pointing_game"] == 1.0


def test_bootstrap_interval():
    assert bootstrap(np.full(20, 0.5)) == {"mean": 0.5, "ci95": [0.5, 0.5]}
    lo, hi = bootstrap(np.r_[np.zeros(50), np.ones(50)])["ci95"]
    assert 0.35 < lo < 0.5 < hi < 0.65


def test_lattice_factor_on_a_synthetic_lattice():
    lattice = torch.zeros(3, 64, 64)
    lattice[:, 3::16, 5::16] = 1.0
    assert lattice_factor(lattice, 16) == pytest.approx(256)
    assert lattice_factor(lattice, 32) == pytest.approx(256)  # half the 32-px phases of one 16-px phase: 1024 / 4
    assert lattice_factor(torch.ones(2, 64, 64), 16) == pytest.approx(1)
    smooth = torch.rand(16, 128, 128, generator=torch.Generator().manual_seed(0))
    assert lattice_factor(smooth, 16) < 1.2


def test_layout_floor_tells_a_central_blob_from_a_lattice():
    """A blob in the middle of every map loads some 32 px phases with no lattice: its factor is at its floor (the
    periods 31 and 33 px); a 32 px lattice on top of the same blob stands far above it. A 2 px lattice over the
    head stands above the floor too, and leaks into it far less than into the even periods 30 and 34 px."""
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    blob = torch.exp(-((yy - 60) ** 2 + (xx - 66) ** 2) / (2 * 8.0**2)).expand(8, 128, 128)
    assert lattice_factor(blob, 32) > 1.5
    assert lattice_factor(blob, 32) == pytest.approx(layout_floor(blob, 32), rel=0.15)
    lattice = blob.clone()
    lattice[:, 7::32, 9::32] += 5 * blob.sum() / 8 / 16
    assert lattice_factor(lattice, 32) > 2 * layout_floor(lattice, 32)
    head = (((yy - 64) ** 2 + (xx - 64) ** 2) < 45**2).float().expand(8, 128, 128)
    fine = head * (torch.arange(128) % 2 == 0).float()
    assert lattice_factor(fine, 32) > 1.3 * layout_floor(fine, 32)
    assert layout_floor(fine, 32) < 0.7 * (lattice_factor(fine, 30) + lattice_factor(fine, 34)) / 2


def test_upsample_cam_has_no_border_plateau():
    grid = torch.zeros(1, 4, 4)
    grid[0, 0, 0] = 1.0
    up = upsample_cam(grid, (128, 128))[0]
    row, col, ties = peak(up.numpy())
    assert 12 <= row <= 16 and 12 <= col <= 16 and ties <= 4  # the cell's centre, not the image's corner
    assert up[0, 0] < up[15, 15]


@pytest.mark.parametrize("layer", LAYERS)
def test_gradcam_layers(tiny_model_dir, layer):
    model, _info = load_model(tiny_model_dir)
    x = torch.randn(2, 1, 32, 32)
    maps = explain(model, x, None, "gradcam", layer=layer)
    assert maps.shape == (2, 32, 32) and bool((maps >= 0).all())
    if layer in ("product", "mean"):
        assert float(maps.max()) <= 1.0 + 1e-6


def test_settings_are_checked():
    with pytest.raises(KDCoreError, match="choose from"):
        METHODS["gradcam"].resolve({"layer": "nope"})
    with pytest.raises(KDCoreError, match="no setting"):
        METHODS["lrp"].resolve({"layer": "last"})
    assert "native" in METHODS["gradcam"].caption() and "composite" in METHODS["lrp"].caption()


def test_explain_image_api(tiny_model_dir, tmp_path):
    model, info = load_model(tiny_model_dir)
    path = tmp_path / "wide.png"
    Image.fromarray((np.random.default_rng(0).random((40, 80)) * 255).astype(np.uint8)).save(path)
    result = explain_image(model, info.spec, path, "gradcam", "true", label=2, layer="previous")
    assert result.target == 2 and result.heatmap.shape == (32, 32) and result.overlay.shape == (40, 80, 3)
    assert result.x.shape == (1, 1, 32, 32) and result.settings == {"layer": "previous"}
    assert result.frame == Frame(40, 80, 32) and "previous" in result.caption
    assert explain_image(model, info.spec, path.read_bytes(), "lrp", 1).target == 1
    with pytest.raises(KDCoreError, match="label"):
        explain_image(model, info.spec, path, "lrp", "true")
    with pytest.raises(KDCoreError, match="out of range"):
        explain_image(model, info.spec, path, "lrp", 9)


def boxed_folder(root, n=3, size=48):
    """Class folders of bright-square images, each with its YOLO box file; the image is wider than tall."""
    rng = np.random.default_rng(0)
    for name in CLASSES[:3]:
        (root / name).mkdir(parents=True)
        for i in range(n):
            img = (rng.random((size, size + 16)) * 40).astype(np.uint8)
            x0, y0 = rng.integers(4, 28, 2)
            img[y0 : y0 + 12, x0 : x0 + 12] = 250
            Image.fromarray(img).save(root / name / f"{i:04d}.jpg")
            (root / name / f"{i:04d}.txt").write_text(
                f"{(x0 + 6) / (size + 16):.4f} {(y0 + 6) / size:.4f} {12 / (size + 16):.4f} {12 / size:.4f}\n")
    return root


def test_localise_folder(tiny_model_dir, tmp_path):
    folder = boxed_folder(tmp_path / "boxes")
    items = find_boxed_images(folder, CLASSES, max_images=4)
    assert [i.label for i in items] == [0, 1, 2, 0]  # classes in turn
    model, info = load_model(tiny_model_dir)
    res = localise(model, info, folder, "gradcam", "true", {"layer": "product"}, out_dir=tmp_path / "png")
    assert res["n"] == 9 and res["settings"] == {"layer": "product"} and set(res["per_class"]) == set(CLASSES[:3])
    for key in ("pointing_game", "pointing_game_tol15", "energy_in_box", "energy_on_background",
                "centre_pointing_game", "uniform_pointing_game", "uniform_energy_on_background", "ties"):
        lo, hi = res[key]["ci95"]
        assert lo <= res[key]["mean"] <= hi
    assert res["pointing_game_tol15"]["mean"] >= res["pointing_game"]["mean"]
    assert len(list((tmp_path / "png").glob("*.png"))) == 9
    with pytest.raises(KDCoreError, match="not a class"):
        (folder / "cats").mkdir()
        localise(model, info, folder)


def test_cli_localise(tiny_model_dir, tmp_path, capsys):
    folder = boxed_folder(tmp_path / "boxes")
    out = tmp_path / "loc.json"
    assert main(["localise", "--model", str(tiny_model_dir), "--method", "lrp", "--data", str(folder),
                 "--json", str(out), "--max-images", "5", "--setting", "composite=epsilon-plus-flat"]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 5 and res["settings"] == {"composite": "epsilon-plus-flat"} and len(res["images"]) == 5
    assert "pointing game" in capsys.readouterr().out
    assert main(["localise", "--model", str(tiny_model_dir), "--data", str(tmp_path / "none"), "--json",
                 str(out)]) == 2


def test_gradcam_ceiling(tmp_path):
    from bench.gradcam_ceiling import cell_peaks
    from bench.gradcam_ceiling import main as ceiling

    assert cell_peaks(2, 8) == [(1, 1), (1, 5), (5, 1), (5, 5)]  # the first of the two pixels nearest each centre
    assert cell_peaks(4, 128)[0] == (15, 15) and len(set(cell_peaks(4, 128))) == 16
    folder = boxed_folder(tmp_path / "boxes")
    assert ceiling(["--boxes", str(folder), "--size", "48", "--grids", "2,16", "--out", str(tmp_path / "c")]) == 0
    res = json.loads((tmp_path / "c.json").read_text())["grids"]
    coarse, fine = res["2"]["all"]["ceiling"]["mean"], res["16"]["all"]["ceiling"]["mean"]
    assert res["2"]["all"]["n"] == 9 and 0.0 <= coarse <= fine == 1.0  # 12 px boxes always hold a 3 px cell's peak
    assert res["2"]["all"]["ceiling_tol15"]["mean"] >= coarse


def test_box_text_is_checked_and_drawn():
    from kdcore.explain.localise import parse_box
    from kdcore.explain.render import BOX_COLOUR, draw_box

    assert parse_box("0.5 0.25 0.2 0.1\n") == (0.5, 0.25, 0.2, 0.1)
    for bad in ("", "0.5 0.5 0.2", "a b c d", "50 50 20 20", "0.5 0.5 0 0.1"):
        with pytest.raises(KDCoreError, match="my box"):
            parse_box(bad, "my box")
    out = draw_box(np.zeros((100, 200, 3), np.uint8), (0.5, 0.5, 0.5, 0.2))
    assert tuple(out[50, 50]) == BOX_COLOUR and tuple(out[40, 100]) == BOX_COLOUR  # left edge x 50, top edge y 40
    assert out[50, 100].sum() == 0 and out[50, 30].sum() == 0  # inside and outside untouched


def test_lattice_sources_bench_isolates_each_kind_of_strided_layer(tiny_model_dir, tiny_data, tmp_path):
    from bench.lrp_lattice_sources import VARIANTS
    from bench.lrp_lattice_sources import main as sources
    from kdcore.explain.lrp import epsilon_plus_flat

    model, info = load_model(tiny_model_dir)
    for m in model.modules():  # timm zero-initialises each block's last BatchNorm: give the residual branches weight
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = torch.randn(2, 1, info.spec.size, info.spec.size)
    maps = {name: lrp_map(model, x, 0, epsilon_plus_flat(d)) for name, d in VARIANTS.items()}
    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))

    plain = maps["none (epsilon-plus-flat)"]
    assert same(plain, explain(model, x, 0, "lrp", composite="epsilon-plus-flat"))
    assert same(maps["all (epsilon-plus-flat-destrided)"], explain(model, x, 0, "lrp",
                                                                  composite="epsilon-plus-flat-destrided"))
    # test_resnet downsamples its shortcuts by average pooling: no strided 1x1 convolution to destride; its strided
    # 3x3 convolutions and its stem are
    assert same(maps["shortcuts (1x1)"], plain)
    assert not same(maps["block convolutions (3x3 and larger)"], plain)
    assert not same(maps["stem"], plain)
    out = tmp_path / "sources"
    assert sources(["--models", str(tiny_model_dir), "--boxes", str(boxed_folder(tmp_path / "boxes")), "--n", "4",
                    "--data", str(tiny_data), "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert list(res["models"][0]["variants"]) == list(VARIANTS) and res["models"][0]["n"] == 4
    assert res["models"][0]["n_val"] == 4
    for v in res["models"][0]["variants"].values():
        assert 0.0 <= v["energy_on_background"]["mean"] <= 1.0 and v["relevance_kept"] > 0
        kinds = ("lattice", "floor", "val_lattice", "val_floor")
        assert all(v[f"{kind}{g}"] >= 1.0 for kind in kinds for g in (16, 32))
    assert "shortcuts (1x1)" in out.with_suffix(".md").read_text()
