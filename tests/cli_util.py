"""Running the click commands in-process for tests, with stderr kept apart from stdout."""
from click.testing import CliRunner


def cli_runner():
    """A CliRunner whose results have separate .stdout and .stderr (on every click version)."""
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        return CliRunner()  # click >= 8.2 always keeps them apart
