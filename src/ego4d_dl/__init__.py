"""ego4d-dl: a fast, resumable, verifying downloader for the Ego4D dataset.

Layers, each importing only from the ones below it::

    cli                      Typer front end; the only module that exits or picks exit codes
    dashboard, progress,     what the user sees: live view, plain and JSON lines, tables;
    report                   only dashboard and report import rich
    download, verify,        one command's run: plan, adopt, check, transfer; diagnose;
      doctor, status           read every journal of a directory (offline)
    engine, planner, demo,   async orchestration (no UI, never prints): transfers, plans,
      check, adopt, layout,    reading files back, adopting files on disk, part layouts,
      versionfile              the original CLI's manifest.ver
    store, journal, files    S3 I/O, SQLite state, .part files on disk
    plan, integrity, retry,  pure decisions: what to fetch, how to verify, when to retry,
      shard, bandwidth         which shard owns a key, how fast to read
    manifest, catalog        Ego4D facts and manifest parsing, pure
    events, config, errors   values shared by everything

``sandbox`` (a local SeaweedFS S3 server) stands beside the stack: tests and ``demo`` use it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
