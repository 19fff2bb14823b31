"""The README's Python example is a test: it must run as written, in a fresh working directory."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks


def test_readme_python_examples_use_relative_paths():
    """A reader copies the example into their own folder: it must not write to fixed absolute
    names such as /tmp/x, which collide between users and runs."""
    for block in python_blocks():
        absolute = re.findall(r"""["'](/[^"']*|[A-Za-z]:\\[^"']*)["']""", block)
        assert not absolute, f"README example names absolute paths {absolute}; use relative names"


def test_readme_python_examples_run(glove_train, tmp_path, monkeypatch):  # glove_train: skips without the data wheel
    monkeypatch.chdir(tmp_path)  # the example's relative file names land here, not in the checkout
    for block in python_blocks():
        exec(compile(block, str(README), "exec"), {})
    assert any(tmp_path.iterdir()), "the README example wrote no file in its working directory"
