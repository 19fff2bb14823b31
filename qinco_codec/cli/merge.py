"""qinco-merge (being written)."""


def main():
    raise SystemExit("qinco-merge: error: not built yet")
