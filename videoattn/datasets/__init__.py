"""Offline dataset tooling that only ``tools/`` uses: preparing Kinetics-style videos
(:mod:`.prepare`, :mod:`.prepare_rows`, :mod:`.prepare_run`), checking a dataset (:mod:`.check`)
and the synthetic demo set (:mod:`.synthetic`). Nothing here imports torch at module level, so
the worker processes of ``tools/prepare_data.py`` start quickly."""
