"""qinco-search (being written)."""


def main():
    raise SystemExit("qinco-search: error: not built yet")
