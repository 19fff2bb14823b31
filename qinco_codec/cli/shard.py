"""qinco-shard (being written)."""


def main():
    raise SystemExit("qinco-shard: error: not built yet")
