"""User images for image_classification: a folder per class or a CSV/TSV/JSONL list, checked with Pillow.

The tf.data graph reads and decodes the files later, mid-epoch, where a bad file
surfaces as an opaque decode error without its name. So every file is opened
here first: a missing, empty, truncated or unsupported file is a bad row naming
the file (and the list's line), under the ``--on-bad-rows`` rule. Only the paths
are kept, so a large photo set is never held in memory.

Checking stays cheap: Pillow reads the header, a PNG is ``verify()``-ed (the CRC
of every chunk through IEND), and a JPEG or GIF that ends with its end marker is
taken as complete. ``verify()`` does not notice a truncated JPEG, GIF or BMP, so
those without the marker (and BMPs) are decoded, a JPEG at 1/8 scale.
"""
from __future__ import annotations

import io
import os
from typing import List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from tfpipeline.data.examples import ImageExample
from tfpipeline.data.rows import BadRows, has_columns, read_text, row_field, table_format, table_rows
from tfpipeline.errors import DataError

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")                 # what tf.io.decode_image decodes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")     # their file suffixes (compared case-insensitively)
# Images the decoder cannot read: in a class folder they are reported as bad rows instead of silently ignored.
UNSUPPORTED_IMAGE_SUFFIXES = (".tif", ".tiff", ".webp", ".heic", ".heif", ".avif", ".jp2", ".ico")
_FORMAT_ALIASES = {"MPO": "JPEG"}   # camera JPEGs carrying extra preview frames decode as their first JPEG
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")   # first bytes of the formats
_END_MARKERS = {"JPEG": b"\xff\xd9", "GIF": b"\x3b"}                           # last bytes of a complete file
_TAIL_PADDING = b"\x00\r\n\t "
SIZE_SAMPLE = 500


def check_image(path: str) -> Optional[str]:
    """None when ``path`` is a readable JPEG, PNG, GIF or BMP image, else a short description of the problem."""
    if not os.path.isfile(path):
        return "file not found"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            kind = _FORMAT_ALIASES.get(image.format, image.format)
            if kind not in IMAGE_FORMATS:
                return f"unsupported format {image.format} (use JPEG or PNG)"
            _check_complete(image, kind, path)
    except UnidentifiedImageError:
        return "truncated/corrupt" if _has_signature(path) else "not an image"
    except PermissionError:
        return "unreadable (permission denied)"
    except Image.DecompressionBombError as e:
        return f"too large ({e})"
    except Exception:   # Pillow's decoders raise OSError, SyntaxError, struct.error, ... on damaged data
        return "truncated/corrupt"
    return None


def _check_complete(image: Image.Image, kind: str, path: str) -> None:
    """Raise if the file's data is cut short or damaged (see the module docstring for what is checked)."""
    if kind == "PNG":
        image.verify()
        return
    if kind in _END_MARKERS and _tail(path).rstrip(_TAIL_PADDING).endswith(_END_MARKERS[kind]):
        return
    if kind == "JPEG":
        image.draft(image.mode, (1, 1))   # the smallest DCT scale: every byte is still read, little is computed
    image.load()


def _tail(path: str, size: int = 64) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - size))
        return f.read()


def _has_signature(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8).startswith(_SIGNATURES)


def read_image_folder(root: str, *, bad_rows: Optional[BadRows] = None) -> List[ImageExample]:
    """Read ``root/<label>/<image files>``: the label is the subfolder's name.

    Only images directly inside each class folder count: deeper folders, files
    directly in ``root``, hidden entries (``.name``, e.g. macOS ``._x.jpg``) and
    files without an image suffix are ignored. Folders and files are taken in
    sorted order, so the examples are deterministic. A file with an image suffix
    that ``check_image`` rejects is a bad row ``"<path>: <problem>"``; an empty
    class folder, a root without class folders or without any image is a
    ``DataError`` naming the folder.
    """
    bad_rows = bad_rows or BadRows()
    if not os.path.isdir(root):
        raise DataError(f"{root}: not a folder")
    labels = _class_folders(root)
    if not labels:
        raise DataError(f"{root}: no class subfolders (expected {os.path.join(root, '<label>', '<image files>')})")
    examples = []
    for label in labels:
        examples += _read_class_folder(os.path.join(root, label), label, bad_rows)
    if not examples:
        raise DataError(f"{root}: no readable images ({bad_rows.summary()})")
    return examples


def _class_folders(root: str) -> List[str]:
    return [name for name in sorted(os.listdir(root))
            if not name.startswith(".") and os.path.isdir(os.path.join(root, name))]


def _read_class_folder(folder: str, label: str, bad_rows: BadRows) -> List[ImageExample]:
    paths = _image_files(folder)
    if not paths:
        raise DataError(f"{folder}: class folder without images ({', '.join(IMAGE_SUFFIXES)}); "
                        "add images or remove the folder")
    examples = []
    for path in paths:
        problem = check_image(path)
        if problem:
            bad_rows.bad(f"{path}: {problem}")
            continue
        examples.append(ImageExample(path, label, origin=path))
    return examples


def _image_files(folder: str) -> List[str]:
    """Sorted paths of the files in ``folder`` whose suffix says image (supported or not)."""
    suffixes = IMAGE_SUFFIXES + UNSUPPORTED_IMAGE_SUFFIXES
    paths = (os.path.join(folder, name) for name in sorted(os.listdir(folder)) if not name.startswith("."))
    return [path for path in paths if os.path.splitext(path)[1].lower() in suffixes and os.path.isfile(path)]


def read_image_list(path: str, *, image_column: str = "path", label_column: Optional[str] = "label",
                    bad_rows: Optional[BadRows] = None) -> List[ImageExample]:
    """Read a CSV/TSV (header row) or JSONL list of images: one image path and one label per row.

    Paths are relative to the list file's folder, or absolute. A row with an
    empty field or an image ``check_image`` rejects is a bad row
    (``"file:line: <image path>: <problem>"``); a CSV/TSV header without
    ``image_column`` or ``label_column`` stops the read. ``label_column=None``
    reads a list of unlabelled images (to predict).
    """
    bad_rows = bad_rows or BadRows()
    fmt = _list_format(path)
    folder = os.path.dirname(path)
    columns = [image_column] + ([label_column] if label_column else [])
    examples = []
    for line, row in table_rows(path, read_text(path), fmt, bad_rows):
        if not has_columns(path, line, row, columns, fmt, bad_rows):
            continue
        try:
            image = os.path.normpath(os.path.join(folder, row_field(path, line, row, image_column)))
            label = row_field(path, line, row, label_column) if label_column else None
        except DataError as e:
            bad_rows.bad(str(e))
            continue
        problem = check_image(image)
        if problem:
            bad_rows.bad(f"{path}:{line}: {image}: {problem}")
            continue
        examples.append(ImageExample(image, label, origin=f"{path}:{line}"))
    if not examples:
        raise DataError(f"{path}: no data rows" + (f" ({bad_rows.summary()})" if bad_rows.skipped else
                                                   " (only a header?)"))
    return examples


def _list_format(path: str) -> str:
    return table_format(path, "an image list must be a .csv, .tsv or .jsonl file (or give a folder with one "
                              "subfolder per class)")


def read_image_source(path: str, *, bad_rows: Optional[BadRows] = None, image_column: str = "path",
                      label_column: Optional[str] = "label") -> List[ImageExample]:
    """A folder is read as one subfolder per class (the columns are unused), a file as a list of images."""
    if os.path.isdir(path):
        return read_image_folder(path, bad_rows=bad_rows)
    if os.path.isfile(path):
        return read_image_list(path, image_column=image_column, label_column=label_column, bad_rows=bad_rows)
    raise DataError(f"{path}: no such folder or file (image_classification reads a folder with one subfolder "
                    "per class, or a CSV/TSV/JSONL list of image paths and labels)")


def image_sizes(examples: Sequence[ImageExample], limit: int = SIZE_SAMPLE) -> List[Tuple[int, int]]:
    """(width, height) of up to ``limit`` evenly spaced examples, read from the image headers only."""
    return [_image_size(example) for example in _evenly_spaced(examples, limit)]


def _evenly_spaced(items: Sequence, limit: int) -> list:
    if len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(max(limit, 0))]


def _image_size(example: ImageExample) -> Tuple[int, int]:
    source = io.BytesIO(example.image) if isinstance(example.image, bytes) else example.image
    try:
        with Image.open(source) as image:
            return image.size
    except Exception as e:   # a file changed since it was checked, or bytes that are not an image
        where = example.origin or (example.image if isinstance(example.image, str) else "image bytes")
        raise DataError(f"{where}: cannot read the image size ({e})") from None
