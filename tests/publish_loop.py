"""Publish STORE... to ROOT in turn, ROUNDS times; print each version (test_publish's race)."""

import sys

from ragbatch.store.publish import publish

root, rounds, keep, *stores = sys.argv[1:]
for _ in range(int(rounds)):
    for store in stores:
        print(publish(store, root, keep=int(keep)).version.name, flush=True)
