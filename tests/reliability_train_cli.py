"""The qinco-train command with shorter epochs, for the training fault-injection tests.

    python tests/reliability_train_cli.py DATA -o MODEL ... (the arguments of qinco-train)

Runs exactly the installed entry point (qinco_codec.cli.train:main: argument parsing, training,
checkpoint after every epoch, atomic model write, one-line errors) in its own process, except
that when QINCO_TEST_SAMPLES_PER_EPOCH is set, an epoch is that many samples instead of 32768.
The command has no option for it, and the default makes a 4-epoch run take about a minute on
two CPU cores: too long to kill and resume a dozen times inside the test suite.
"""
import functools
import os

import qinco_codec
from qinco_codec import training

if __name__ == "__main__":
    samples = int(os.environ.get("QINCO_TEST_SAMPLES_PER_EPOCH", "0"))
    if samples:
        # qinco_codec/cli/train.py does `from .. import train` when it runs: it picks this up
        qinco_codec.train = functools.partial(training.train, samples_per_epoch=samples)
    from qinco_codec.cli.train import main

    main(prog_name="qinco-train")
