"""qinco-index (being written)."""


def main():
    raise SystemExit("qinco-index: error: not built yet")
