"""Tools on top of runs: a run folder read back (``runs``), tables and figures of results (``results``), the sweep
summary (``sweep``), instability analysis (``stability``), export (``export/``, a module per file it makes), and the
one-line errors of the scripts (``cli``). May import every other layer; nothing imports them but ``scripts/`` and
Hydra's sweep callback.
"""
