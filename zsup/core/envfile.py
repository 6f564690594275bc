r"""`.env` files: the environment a Procfile application runs with.

The syntax is the common subset that foreman, honcho and docker-compose users already write,
so one `.env` works with all of them:

    # a comment
    PORT=5000
    export DEBUG=1                  # the `export` prefix lets the file be sourced by sh
    GREETING='literal $text, \n'    # single quotes: taken as written
    MOTD="two\nlines \"quoted\""     # double quotes: \n \t \r \" \' \\ (and \a \b \f \v) are escapes
    URL=http://host/a#b             # unquoted: ' # ...' ends the value, 'a#b' does not
    QUOTE=\"bare\"                  # unquoted: \" \' and \\ are escapes (honcho), other \ kept

Each variable sits on one line. Values are kept literal: `$VAR` inside a value is not
expanded while parsing, because the same text would mean different things to different tools;
callers that want expansion call `substitute` on purpose. A line that cannot be read is an
error (`BadRequest "<file>:<line>: <reason>"`), never silently skipped: a typo in a `.env`
otherwise shows up much later as a process running with the wrong setting. Callers that must
read what honcho reads (the `zsup` Procfile tool) pass `warn`: such a line is then skipped and
reported through it instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from zsup.errors import BadRequest

KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXPORT_RE = re.compile(r"^export\s+")
TRAILING_COMMENT_RE = re.compile(r"\s+#.*$")
# python-dotenv's set for double quotes; unquoted values decode only quotes and backslashes.
DOUBLE_QUOTE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\",
                        "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
UNQUOTED_ESCAPE_RE = re.compile(r"\\([\\\"'])")
SUBSTITUTION_RE = re.compile(r"\$(?:(\$)|([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def parse_env(text: str, source: str = "<env>", warn: Callable[[str], None] | None = None) -> dict[str, str]:
    """Parse the text of a `.env` file; `source` names it in error messages.

    A key given twice keeps its last value, as it would in a shell. A bad line is a
    BadRequest, or, with `warn`, skipped after `warn("<source>:<line>: <reason>")`.
    """
    env: dict[str, str] = {}
    for lineno, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        try:
            item = _parse_line(line)
        except ValueError as exc:
            if warn is None:
                raise BadRequest(f"{source}:{lineno}: {exc}") from None
            warn(f"{source}:{lineno}: {exc}; line skipped")
            continue
        if item is not None:
            env[item[0]] = item[1]
    return env


def load_env_files(paths: list[str], warn: Callable[[str], None] | None = None) -> dict[str, str]:
    """Read `.env` files in order and merge them; a later file wins over an earlier one."""
    env: dict[str, str] = {}
    for path in paths:
        env.update(parse_env(read_text(path, "env file"), path, warn))
    return env


def read_text(path: str, what: str) -> str:
    """Read a UTF-8 text file, turning every way it can fail into one BadRequest line."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise BadRequest(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise BadRequest(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise BadRequest(f"{path}: {exc.strerror or exc}") from None


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Replace `$VAR` and `${VAR}` with their values in env; `$$` gives a `$`.

    An unknown variable is left as written rather than emptied, so that a command keeps its
    meaning (and the shell can still expand it later) when the variable comes from elsewhere.
    Not for a line a shell will read (zsup/core/process.py passes a shell `cmd` as written):
    there `$$` is the shell's own pid.
    """

    def replace(match: re.Match) -> str:
        if match.group(1):
            return "$"
        key = match.group(2) or match.group(3)
        return env[key] if key in env else match.group(0)

    return SUBSTITUTION_RE.sub(replace, text)


def _parse_line(line: str) -> tuple[str, str] | None:
    """One line -> (key, value), None for a blank or comment line; ValueError says what is wrong."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    stripped = EXPORT_RE.sub("", stripped, count=1)
    key, sep, raw = stripped.partition("=")
    key = key.strip()
    if not sep:
        raise ValueError(f"expected KEY=value, got {line.strip()!r}")
    if not KEY_RE.match(key):
        raise ValueError(f"invalid variable name {key!r} (letters, digits and '_', not starting with a digit)")
    quoted = raw.lstrip()
    if quoted.startswith("'"):
        end = quoted.find("'", 1)
        if end < 0:
            raise ValueError(f"unterminated single-quoted value for {key}")
        value, rest = quoted[1:end], quoted[end + 1 :]
    elif quoted.startswith('"'):
        value, rest = _read_double_quoted(quoted, key)
    else:
        # Cut the comment before stripping: in 'KEY= # note' the blank before '#' counts.
        return key, UNQUOTED_ESCAPE_RE.sub(r"\1", TRAILING_COMMENT_RE.sub("", raw).strip())
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise ValueError(f"unexpected text after the quoted value of {key}: {rest!r}")
    return key, value


def _read_double_quoted(raw: str, key: str) -> tuple[str, str]:
    """Split '"va\\"lue" rest' into ('va"lue', ' rest'), decoding the escapes on the way."""
    out: list[str] = []
    i = 1
    while i < len(raw):
        char = raw[i]
        if char == '"':
            return "".join(out), raw[i + 1 :]
        if char == "\\" and i + 1 < len(raw) and raw[i + 1] in DOUBLE_QUOTE_ESCAPES:
            out.append(DOUBLE_QUOTE_ESCAPES[raw[i + 1]])
            i += 2
            continue
        # Any other backslash is kept: "C:\temp" should not lose a character.
        out.append(char)
        i += 1
    raise ValueError(f"unterminated double-quoted value for {key}")
