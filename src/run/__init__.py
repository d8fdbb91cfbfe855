"""A run's life in its folder: what it writes and when, how it stops, resumes and is requeued.

``folder`` (the launch checks and the one writer of a run folder), ``keys`` (what each config key
means to a run), ``record`` (``results.json`` provenance, ``summary.csv``), ``checkpoints`` and
``rng`` (what a resume restores), ``stopping`` (signals, interruption text), ``launch`` and
``slurm`` (DDP and cluster jobs), ``threads`` and ``precision`` (the machine's settings),
``loggers``/``csv_logger``/``progress`` (what a run shows). Importing the package imports none of
them: a job's first lines must stay light.
"""
