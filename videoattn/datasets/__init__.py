"""Offline dataset tooling that only ``tools/`` uses: preparing Kinetics-style videos
(:mod:`.prepare`, :mod:`.prepare_rows`, :mod:`.prepare_run`), checking a dataset (:mod:`.check`)
and the synthetic sets (:mod:`.synthetic`: the demo's motion classes; :mod:`.synthetic_relation`:
a relation between distant objects at distant times). Nothing here imports torch at module level, so
the worker processes of ``tools/prepare_data.py`` start quickly."""
