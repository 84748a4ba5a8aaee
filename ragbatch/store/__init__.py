"""A store: a folder holding what `index` built and everything that reads it.

    STORE/manifest.json   what built it (manifest.py)
    STORE/chroma/         the vectors, one packed record per chunk (local.py, records.py);
                          or, when the manifest names a server, a collection there (server.py)
    STORE/bm25/           the BM25 keyword index (lexical.py; lexical_build.py builds it)
    STORE/.ragbatch.*     the locks of its one writer and its readers (locks.py)

vectors.py is the protocol both vector collections follow and the one factory that opens
them; reader.py opens a whole store to read it; check.py verifies one; publish.py copies
one to shared storage as a verified version, and published.py gives readers a verified
local copy of a published version.
"""
