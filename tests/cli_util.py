"""Running the click commands in-process for tests, with stderr kept apart from stdout; the
benchmark tests' shared pieces (thread counts put back, the one-line error)."""
import pytest
from click.testing import CliRunner


def cli_runner():
    """A CliRunner whose results have separate .stdout and .stderr (on every click version)."""
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 always keeps them apart


@pytest.fixture(scope="module")
def restore_threads():
    """A benchmark's --threads sets torch's and faiss's thread counts for the whole process: put
    them back after the module (use with autouse in the module: `restore_threads` imported)."""
    import faiss
    import torch
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


def one_line_error(result, code):
    """The command's only stderr line, after checking it exited with `code` and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinco-bench: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
