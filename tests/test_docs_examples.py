"""Every ```sh example of README.md and docs/*.md runs, in order, against a real zsupd.

One test per Markdown file (docs/testing.md, "The docs runner"): a fresh zsupd and gateway
from etc/zsup.ini, the file's blocks as one story. `pytest tests/test_docs_examples.py -k
zsupctl` runs one file's examples.
"""

import os
import re

import pytest
from docs_runner import ROOT, DocsError, Story, extract, markdown_files

FILES = markdown_files()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", FILES)
def test_examples_run(name, tmp_path):
    blocks = [b for b in extract(os.path.join(ROOT, name)) if b.skip is None]
    if not blocks:
        pytest.skip(f"{name} has no runnable example")
    story = Story(tmp_path)
    story.prepare()
    failure = None
    try:
        story.start()
        for block in blocks:
            story.run(block)
    except DocsError as e:
        failure = str(e)
    finally:
        story.stop()
        print("\n".join(f"{where}: {seconds:.1f} s" for where, seconds in story.times))
    if failure:  # the file, line, block and output say it all: no traceback
        pytest.fail(failure, pytrace=False)


def test_one_convention_for_shell_examples():
    """Shell examples are ```sh blocks: no ```bash, ```console or ```shell, and no unlabeled
    block of `$ command` lines the runner would not see."""
    wrong = []
    for name in FILES:
        with open(os.path.join(ROOT, name), encoding="utf-8") as f:
            lines = f.read().split("\n")
        inside = None
        for n, line in enumerate(lines, 1):
            if line.startswith("```"):
                if inside is None:
                    inside = (n, line[3:].strip())
                    if inside[1] in ("bash", "console", "shell", "shell-session", "zsh"):
                        wrong.append(f"{name}:{n}: ```{inside[1]} (use ```sh)")
                else:
                    inside = None
            elif inside is not None and inside[1] in ("", "text") and re.match(r"\$ \w", line):
                wrong.append(f"{name}:{n}: a `$ command` line in a ```{inside[1]} block (use ```sh)")
    assert not wrong, "\n".join(wrong)


def test_markers_are_checked(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- docs: skip -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match="needs a reason"):
        extract(str(doc))
    doc.write_text("<!-- docs: expct x -->\n```sh\ntrue\n```\n")
    with pytest.raises(DocsError, match="unknown docs marker"):
        extract(str(doc))


def test_a_failing_or_hanging_block_fails_naming_its_line(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("text\n\n```sh\necho one\nfalse\necho never\n```\n\n<!-- docs: timeout 1 -->\n"
                   "```sh\nsleep 30\n```\n\n<!-- docs: runs-for 0.5 -->\n<!-- docs: expect ^tick -->\n"
                   "```sh\nwhile :; do echo tick; sleep 0.1; done\n```\n"
                   "<!-- docs: expect ^nope$ -->\n```sh\necho :5000\n```\n")
    failing, hanging, bounded, expecting = extract(str(doc))
    story = Story(tmp_path / "story")
    os.makedirs(story.dir)
    story.prepare()
    with pytest.raises(DocsError, match=r"x.md:3: exit status 1 .*\n(.|\n)*--- output ---\none\n$"):
        story.run(failing)
    with pytest.raises(DocsError, match=r"x.md:10: still running after 1.0 s"):
        story.run(hanging)
    assert "tick" in story.run(bounded)
    with pytest.raises(DocsError, match=rf"does not match(.|\n)*:{story.ports[5000]}"):
        story.run(expecting)
    story.stop()
