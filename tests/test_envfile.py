"""`.env` parsing, loading and $VAR substitution (zsup/envfile.py)."""

import pytest

from zsup.core.envfile import load_env_files, parse_env, substitute
from zsup.errors import BadRequest


def write(path, text, mode="w"):
    with open(path, mode) as f:
        f.write(text)
    return str(path)


def test_plain_lines_comments_blank_lines_and_export_prefix():
    text = "# a comment\n\nPORT=5000\n   # indented comment\nexport DEBUG=1\nexport   SPACED=x\n_UNDER_1=y\n"
    assert parse_env(text) == {"PORT": "5000", "DEBUG": "1", "SPACED": "x", "_UNDER_1": "y"}


def test_spaces_around_the_equal_sign_and_surrounding_the_line():
    assert parse_env("  KEY = value  \n") == {"KEY": "value"}


def test_export_is_only_a_prefix_when_followed_by_a_space():
    assert parse_env("export=1\nexporter=2\n") == {"export": "1", "exporter": "2"}


def test_empty_values():
    assert parse_env("A=\nB=''\nC=\"\"\nD=   # only a comment\n") == {"A": "", "B": "", "C": "", "D": ""}


def test_single_quotes_are_literal():
    text = r"""A='x $y # z \n "q" \\'   # trailing comment""" + "\n"
    assert parse_env(text) == {"A": r'x $y # z \n "q" \\'}


def test_double_quotes_decode_newline_quote_and_backslash_escapes():
    text = r'''A="one\ntwo \"q\" back\\slash" # comment''' + "\n"
    assert parse_env(text) == {"A": 'one\ntwo "q" back\\slash'}


def test_double_quotes_keep_other_backslashes_and_single_quotes():
    # \t is an escape (python-dotenv), so the path avoids it
    assert parse_env(r'''P="C:\data\x it's"''') == {"P": "C:\\data\\x it's"}


def test_unquoted_values_lose_a_trailing_comment_but_keep_inner_hashes():
    text = "URL=http://host/a#b\nB=value   # comment\nC=a #b\nD=#notacomment\nE=x\t# tab comment\n"
    assert parse_env(text) == {"URL": "http://host/a#b", "B": "value", "C": "a", "D": "#notacomment", "E": "x"}


def test_unquoted_values_keep_quotes_inside_and_dollars():
    assert parse_env("A=it's \"fine\" $HOME\n") == {"A": "it's \"fine\" $HOME"}


def test_values_are_not_expanded_while_parsing():
    assert parse_env("A=1\nB=$A\nC=\"${A}\"\n") == {"A": "1", "B": "$A", "C": "${A}"}


def test_a_later_line_wins():
    assert parse_env("A=1\nA=2\n") == {"A": "2"}


def test_crlf_line_endings_and_utf8_bom():
    assert parse_env("\ufeffA=1\r\nB='two'\r\nC=\"3\" \r\n") == {"A": "1", "B": "two", "C": "3"}


def test_keys_keep_their_case_and_order():
    env = parse_env("b=1\nA=2\nc=3\n")
    assert list(env.items()) == [("b", "1"), ("A", "2"), ("c", "3")]


@pytest.mark.parametrize(
    "line, reason",
    [
        ("JUSTAKEY", "expected KEY=value"),
        ("export LONELY", "expected KEY=value"),
        ("=value", "invalid variable name ''"),
        ("1ABC=x", "invalid variable name '1ABC'"),
        ("MY-KEY=x", "invalid variable name 'MY-KEY'"),
        ("MY KEY=x", "invalid variable name 'MY KEY'"),
        ("A='open", "unterminated single-quoted value for A"),
        ('A="open', "unterminated double-quoted value for A"),
        ('A="escaped end\\"', "unterminated double-quoted value for A"),
        ("A='x' y", "unexpected text after the quoted value of A"),
        ('A="x"y', "unexpected text after the quoted value of A"),
    ],
)
def test_bad_lines_name_the_source_and_the_line(line, reason):
    with pytest.raises(BadRequest) as info:
        parse_env(f"# header\n\nGOOD=1\n{line}\nLATER=2\n", source="app/.env")
    assert info.value.message.startswith(f"app/.env:4: {reason}")
    assert info.value.code == "bad_request"


def test_default_source_name():
    with pytest.raises(BadRequest, match=r"^<env>:1: expected KEY=value"):
        parse_env("nope")


def test_load_env_files_merges_in_order(tmp_path):
    first = write(tmp_path / "first.env", "A=1\nB=1\n")
    second = write(tmp_path / "second.env", "export B=2\nC='3'\n")
    assert load_env_files([first, second]) == {"A": "1", "B": "2", "C": "3"}
    assert load_env_files([second, first]) == {"A": "1", "B": "1", "C": "3"}
    assert load_env_files([]) == {}


def test_load_env_files_reports_the_file_and_line(tmp_path):
    good = write(tmp_path / "good.env", "A=1\n")
    bad = write(tmp_path / "bad.env", "A=1\nB='x\n")
    with pytest.raises(BadRequest) as info:
        load_env_files([good, bad])
    assert info.value.message == f"{bad}:2: unterminated single-quoted value for B"


def test_a_missing_env_file_is_an_error(tmp_path):
    good = write(tmp_path / "good.env", "A=1\n")
    missing = str(tmp_path / "missing.env")
    with pytest.raises(BadRequest) as info:
        load_env_files([good, missing])
    assert info.value.message == f"{missing}: no such env file"


def test_unreadable_env_files_are_errors(tmp_path):
    with pytest.raises(BadRequest, match=r"^.+: "):
        load_env_files([str(tmp_path)])  # a directory
    binary = write(tmp_path / "bin.env", b"A=\xff\xfe\n", mode="wb")
    with pytest.raises(BadRequest) as info:
        load_env_files([binary])
    assert info.value.message == f"{binary}: not a UTF-8 text file"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$A", "1"),
        ("${A}", "1"),
        ("x$A-y", "x1-y"),
        ("${A}B", "1B"),
        ("$AB", "two"),
        ("$A$B", "1$B"),
        ("$UNKNOWN and ${UNKNOWN}", "$UNKNOWN and ${UNKNOWN}"),
        ("$$", "$"),
        ("$$A", "$A"),
        ("$$$A", "$1"),
        ("cost: 5$", "cost: 5$"),
        ("$1 $- ${A", "$1 $- ${A"),
        ("${bad-name}", "${bad-name}"),
        ("$EMPTY|", "|"),
        ("no variables", "no variables"),
    ],
)
def test_substitute(text, expected):
    assert substitute(text, {"A": "1", "AB": "two", "EMPTY": ""}) == expected


def test_substitute_does_not_expand_values_again():
    assert substitute("$A", {"A": "$B", "B": "no"}) == "$B"
