"""Readers (CSV/TSV/JSONL/CoNLL), their error messages, label maps and file-based task data."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from tfpipeline.data.examples import CLASSIFICATION, NER, TextExample, TokenExample
from tfpipeline.errors import DataError
from tfpipeline.data.labels import LabelMap
from tfpipeline.data.readers import BadRows, detect_format, read_classification_file, read_conll, read_task_file
from tfpipeline.data.sources import load_task_data


def write(tmp_path, name, content) -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- happy paths
def test_csv_reads_rows_with_origins(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\nfirst text,pos\n  second text  ,neg\n")
    rows = read_classification_file(path)
    assert [(r.text, r.label, r.text_pair) for r in rows] == [("first text", "pos", None),
                                                            ("second text", "neg", None)]
    assert [r.origin for r in rows] == [f"{path}:2", f"{path}:3"]


def test_csv_quoted_commas_and_newlines(tmp_path):
    content = 'text,label\n"hello, world",pos\n"line one\nline two",neg\nplain,pos\n'
    path = write(tmp_path, "q.csv", content)
    rows = read_classification_file(path)
    assert [r.text for r in rows] == ["hello, world", "line one\nline two", "plain"]
    assert [r.label for r in rows] == ["pos", "neg", "pos"]
    # the quoted newline spans physical lines 3-4, so the next record is on line 5
    assert rows[2].origin.endswith(":5")


def test_csv_text_pair_and_custom_columns(tmp_path):
    path = write(tmp_path, "p.csv", "premise,hypothesis,gold,extra\nA cat sat.,An animal sat.,entail,x\n"
                                    "A dog ran.,Nobody moved.,contra,y\n")
    rows = read_classification_file(path, text_column="premise", pair_column="hypothesis", label_column="gold")
    assert rows[0] == TextExample("A cat sat.", "entail", "An animal sat.", f"{path}:2")
    assert rows[1].text_pair == "Nobody moved." and rows[1].label == "contra"


def test_tsv_with_pair(tmp_path):
    path = write(tmp_path, "d.tsv", "text\ttext_pair\tlabel\nhello, there\tsecond, part\tyes\n")
    (row,) = read_classification_file(path, pair_column="text_pair")
    assert (row.text, row.text_pair, row.label) == ("hello, there", "second, part", "yes")


def test_jsonl_with_pair_numeric_label_and_blank_lines(tmp_path):
    lines = [json.dumps({"text": "héllo wörld", "label": 1, "text_pair": "b"}), "",
             json.dumps({"text": "second", "label": 0, "text_pair": "c", "ignored": [1, 2]})]
    path = write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    rows = read_classification_file(path, pair_column="text_pair")
    assert [(r.text, r.label, r.text_pair) for r in rows] == [("héllo wörld", "1", "b"), ("second", "0", "c")]
    assert rows[1].origin == f"{path}:3"


def test_utf8_bom_is_accepted(tmp_path):
    path = write(tmp_path, "bom.csv", "\ufefftext,label\nx,y\n".encode("utf-8"))
    assert read_classification_file(path)[0].text == "x"


def test_predict_time_files_without_labels(tmp_path):
    path = write(tmp_path, "u.csv", "text\nno label here\n")
    (row,) = read_classification_file(path, require_labels=False)
    assert row.label is None and row.text == "no label here"


def test_detect_format():
    assert detect_format("a.CSV") == "csv"
    assert detect_format("a.tsv") == "tsv"
    assert detect_format("a.ndjson") == "jsonl"
    assert detect_format("a.conll") == "conll"
    assert detect_format("a.data", "TSV") == "tsv"
    with pytest.raises(DataError, match=r"a\.xlsx"):
        detect_format("a.xlsx")
    with pytest.raises(DataError, match="unknown format"):
        detect_format("a.csv", "parquet")


# --------------------------------------------------------------------------- errors: file + line
def _error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_classification_file(path, **kwargs)
    return str(info.value)


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.csv")
    msg = _error(path)
    assert path in msg and "not found" in msg


@pytest.mark.parametrize("content", ["", "   \n\n"])
def test_empty_file(tmp_path, content):
    path = write(tmp_path, "empty.csv", content)
    msg = _error(path)
    assert path in msg and "empty" in msg


@pytest.mark.parametrize("name,content", [("h.csv", "text,label\n"), ("h.tsv", "text\tlabel\n\n")])
def test_header_only(tmp_path, name, content):
    path = write(tmp_path, name, content)
    msg = _error(path)
    assert path in msg and "no data rows" in msg


def test_missing_column_names_line_and_column(tmp_path):
    path = write(tmp_path, "m.csv", "sentence,label\nhello,pos\n")
    msg = _error(path)
    assert f"{path}:2" in msg and "'text'" in msg and "sentence" in msg


def test_missing_label_column_in_jsonl_line(tmp_path):
    path = write(tmp_path, "m.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    msg = _error(path)
    assert f"{path}:2" in msg and "'label'" in msg


def test_wrong_number_of_fields(tmp_path):
    path = write(tmp_path, "w.csv", 'text,label\n"multi\nline",pos\nok,neg\ntoo,many,fields\n')
    msg = _error(path)
    assert f"{path}:5" in msg and "expected 2 fields" in msg and "got 3" in msg


def test_empty_text_field(tmp_path):
    path = write(tmp_path, "e.csv", "text,label\nfine,pos\n   ,neg\n")
    msg = _error(path)
    assert f"{path}:3" in msg and "'text'" in msg and "empty" in msg


def test_empty_label_field(tmp_path):
    path = write(tmp_path, "e.csv", "text,label\nfine,pos\nno label, \n")
    msg = _error(path)
    assert f"{path}:3" in msg and "'label'" in msg


def test_bad_utf8_names_line(tmp_path):
    path = write(tmp_path, "bad.csv", b"text,label\nok,pos\nbad \xff byte,neg\n")
    msg = _error(path)
    assert f"{path}:3" in msg and "UTF-8" in msg and "0xff" in msg


def test_bad_utf8_in_conll(tmp_path):
    path = write(tmp_path, "bad.conll", b"a\tO\n\nb\tO\n\xc3\tO\n")
    with pytest.raises(DataError, match=rf"{path}:4: not valid UTF-8"):
        read_conll(path)


def test_invalid_json_line(tmp_path):
    path = write(tmp_path, "j.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": \n')
    msg = _error(path)
    assert f"{path}:2" in msg and "invalid JSON" in msg


@pytest.mark.parametrize("line,kind", [('["a", "x"]', "list"), ('"just a string"', "str"), ("3", "int")])
def test_json_line_not_an_object(tmp_path, line, kind):
    path = write(tmp_path, "j.jsonl", '{"text": "a", "label": "x"}\n\n' + line + "\n")
    msg = _error(path)
    assert f"{path}:3" in msg and f"got {kind}" in msg


def test_json_text_not_a_string(tmp_path):
    path = write(tmp_path, "j.jsonl", '{"text": ["a", "b"], "label": "x"}\n')
    msg = _error(path)
    assert f"{path}:1" in msg and "'text'" in msg


def test_classification_rejects_conll_extension(tmp_path):
    path = write(tmp_path, "x.conll", "a\tO\n")
    assert "csv, tsv or jsonl" in _error(path)


# --------------------------------------------------------------------------- CoNLL
def test_conll_tab_separated_with_docstart(tmp_path):
    content = ("-DOCSTART-\tO\n\n"
               "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n\n\n"
               "Peter\tB-PER\nBlackburn\tI-PER\n")
    path = write(tmp_path, "t.conll", content)
    sents = read_conll(path)
    assert [s.tokens for s in sents] == [("EU", "rejects", "German", "call"), ("Peter", "Blackburn")]
    assert [s.tags for s in sents] == [("B-ORG", "O", "B-MISC", "O"), ("B-PER", "I-PER")]
    assert [s.origin for s in sents] == [f"{path}:3", f"{path}:9"]


def test_conll_space_separated_four_columns(tmp_path):
    content = ("-DOCSTART- -X- -X- O\n\n"
               "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n"
               "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    path = write(tmp_path, "c.txt", content)
    sents = read_task_file(path, NER)
    assert sents == [TokenExample(("EU", "rejects"), ("B-ORG", "O"), f"{path}:3"),
                     TokenExample(("Peter", "Blackburn"), ("B-PER", "I-PER"), f"{path}:6")]


def test_conll_token_prefix_is_stripped(tmp_path):
    path = write(tmp_path, "w.conll", "en:Paris\tB-LOC\nen:is\tO\nen:en:x\tO\n")
    (sent,) = read_conll(path, token_prefix="en:")
    assert sent.tokens == ("Paris", "is", "en:x")  # only one prefix is stripped
    (raw,) = read_conll(path)
    assert raw.tokens[0] == "en:Paris"


def test_conll_wrong_field_count_names_line(tmp_path):
    path = write(tmp_path, "w.conll", "EU\tNNP\tB-ORG\nrejects\tVBZ\tO\n\nGerman\tB-MISC\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    msg = str(info.value)
    assert f"{path}:4" in msg and "expected 3 fields" in msg and "German" in msg


def test_conll_single_field_needs_tags(tmp_path):
    path = write(tmp_path, "one.conll", "lonely\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected 'token<TAB>tag'"):
        read_conll(path)
    (sent,) = read_conll(path, require_tags=False)
    assert sent.tokens == ("lonely",) and sent.tags is None


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-per"])
def test_conll_non_bio_tag(tmp_path, tag):
    path = write(tmp_path, "bad.conll", f"a\tO\nb\t{tag}\n")
    with pytest.raises(DataError) as info:
        read_conll(path)
    assert f"{path}:2" in str(info.value) and "not a BIO tag" in str(info.value)


def test_conll_only_docstart_is_an_error(tmp_path):
    path = write(tmp_path, "d.conll", "-DOCSTART- O\n\n")
    with pytest.raises(DataError, match="no sentences"):
        read_conll(path)


# --------------------------------------------------------------------------- labels
def test_label_map_unknown_label_names_origin():
    labels = LabelMap(["neg", "pos"])
    assert labels.id("pos") == 1 and labels.name(0) == "neg" and "pos" in labels and len(labels) == 2
    with pytest.raises(DataError) as info:
        labels.id("neutral", "valid.csv:7")
    msg = str(info.value)
    assert msg.startswith("valid.csv:7:") and "'neutral'" in msg and "neg, pos" in msg


def test_label_map_rejects_empty_and_duplicates():
    with pytest.raises(DataError):
        LabelMap([])
    with pytest.raises(DataError, match="duplicates"):
        LabelMap(["a", "b", "a"])


def test_label_map_from_examples():
    ner = [TokenExample(("x", "y", "z"), ("B-PER", "I-PER", "O")), TokenExample(("w",), ("B-LOC",))]
    assert LabelMap.from_examples(ner, NER).names == ["O", "B-LOC", "B-PER", "I-PER"]
    # 'O' first even when the data has no 'O' tag at all
    assert LabelMap.from_examples([TokenExample(("a",), ("B-ORG",))], NER).names == ["O", "B-ORG"]
    clf = [TextExample("a", "pos"), TextExample("b", "neg"), TextExample("c", "pos"), TextExample("d")]
    assert LabelMap.from_examples(clf, CLASSIFICATION).names == ["neg", "pos"]
    with pytest.raises(DataError, match="no labels"):
        LabelMap.from_examples([TextExample("a")], CLASSIFICATION)


def test_label_map_save_load_round_trip(tmp_path):
    labels = LabelMap(["O", "B-PER", "I-PER", "B-ÉTÉ"])
    path = labels.save(str(tmp_path))
    assert json.loads(open(path, encoding="utf-8").read()) == {"labels": labels.names}
    assert LabelMap.load(str(tmp_path)) == labels
    with pytest.raises(DataError, match="label map not found"):
        LabelMap.load(str(tmp_path / "elsewhere"))


# --------------------------------------------------------------------------- task data from files
def test_load_task_data_holds_out_validation_deterministically(tmp_path):
    rows = "".join(f"text number {i},{'pos' if i % 2 else 'neg'}\n" for i in range(30))
    path = write(tmp_path, "train.csv", "text,label\n" + rows)
    a = load_task_data(task=CLASSIFICATION, train_file=path, seed=5)
    b = load_task_data(task=CLASSIFICATION, train_file=path, seed=5)
    assert len(a.validation) == 4 and len(a.train) == 26      # round(10% of 15) = 2 per label
    assert [e.text for e in a.validation] == [e.text for e in b.validation]
    assert {e.text for e in a.train}.isdisjoint(e.text for e in a.validation)
    c = load_task_data(task=CLASSIFICATION, train_file=path, seed=6)
    assert [e.text for e in c.validation] != [e.text for e in a.validation]


def test_held_out_validation_is_stratified_by_label(tmp_path):
    """Rare classes appear in validation (a random 10% would often miss them); a singleton stays in train."""
    counts = {"common": 90, "rare": 8, "rarer": 2, "single": 1}
    rows = [f"{label} example {i},{label}\n" for label, n in counts.items() for i in range(n)]
    data = load_task_data(task=CLASSIFICATION, train_file=write(tmp_path, "train.csv", "text,label\n" + "".join(rows)))
    held = Counter(ex.label for ex in data.validation)
    assert held == {"common": 9, "rare": 1, "rarer": 1}
    assert Counter(ex.label for ex in data.train) == {"common": 81, "rare": 7, "rarer": 1, "single": 1}
    assert data.source("validation").endswith("train.csv, 10% held out")


def test_load_task_data_limits_and_errors(tmp_path):
    train = write(tmp_path, "t.conll", "".join(f"w{i}\tO\n\n" for i in range(10)))
    valid = write(tmp_path, "v.conll", "".join(f"v{i}\tB-X\n\n" for i in range(6)))
    data = load_task_data(task=NER, train_file=train, validation_file=valid, limit_train=4, limit_eval=2)
    assert len(data.train) == 4 and len(data.validation) == 2
    with pytest.raises(DataError, match="no data"):
        load_task_data()
    one = write(tmp_path, "one.csv", "text,label\nonly one,pos\n")
    with pytest.raises(DataError, match="at least 2"):
        load_task_data(task=CLASSIFICATION, train_file=one)


# --------------------------------------------------------------------------- bad rows
BROKEN_CSV = ("text,label\n"
              "a fine film,pos\n"
              "\n"                                    # blank line: ignored, not a bad row
              "first line of a multi-line text\n"      # unquoted newline: its stray line is a bad row
              "that went on,neg\n"
              "too,many,fields\n"
              ",neg\n"                                  # empty text
              "awful,neg\n")


def test_bad_rows_stop_the_read_by_default(tmp_path):
    path = write(tmp_path, "broken.csv", BROKEN_CSV)
    with pytest.raises(DataError, match=r"broken\.csv:4: expected 2 fields \(text, label\), got 1"):
        read_classification_file(path)


def test_bad_rows_skipped_with_their_locations(tmp_path):
    path = write(tmp_path, "broken.csv", BROKEN_CSV)
    data = load_task_data(task=CLASSIFICATION, train_file=path, validation_file=path, on_bad_rows="skip")
    assert [ex.text for ex in data.validation] == ["a fine film", "that went on", "awful"]
    lines = [row.split(": ")[0] for row in data.skipped_rows]
    assert lines == [f"{path}:{n}" for n in (4, 6, 7)] * 2          # train file, then validation file
    assert "got 3" in data.skipped_rows[1] and "'text' is empty" in data.skipped_rows[2]
    summary = BadRows("skip", data.skipped_rows).summary()
    assert summary.startswith("6 bad row(s) skipped: ") and summary.endswith("; ... 1 more")


def test_bad_conll_line_drops_its_sentence_in_skip_mode(tmp_path):
    path = write(tmp_path, "b.conll", "alice\tB-PER\nwent\tO\n\nbob\tB-PER\nran off\tO\tX\nhome\tO\n\nparis\tB-LOC\n")
    with pytest.raises(DataError, match=r"b\.conll:5: expected 2 fields"):
        read_conll(path)
    bad = BadRows("skip")
    sentences = read_conll(path, bad_rows=bad)
    assert [s.tokens for s in sentences] == [("alice", "went"), ("paris",)]
    assert bad.skipped == [f"{path}:5: expected 2 fields like the first line, got 3: 'ran off\\tO\\tX' "
                           "(sentence from line 4 skipped)"]


def test_file_level_problems_are_never_skipped(tmp_path):
    path = write(tmp_path, "cols.csv", "sentence,label\nfine,pos\n")
    with pytest.raises(DataError, match="missing column 'text'"):
        read_classification_file(path, bad_rows=BadRows("skip"))
    with pytest.raises(DataError, match="on_bad_rows must be one of error, skip"):
        BadRows("ignore")
