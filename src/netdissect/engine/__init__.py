"""The dissection engine: settings, the two passes, checkpoints, the activation cache.

    run.run_dissection(probe, dataset, settings)   -> Dissection (writes nothing but its state)
    settings.Settings                              what decides the numbers, tagged by role
    passes.Passes, passes.LayerStats               the passes and a layer's statistics
    checkpoint.Checkpoint                          saved state, SIGTERM, resume, reuse
    cache.ActivationCache                          pass 1's outputs on disk for pass 2

The public `netdissect.dissect` calls `run_dissection`, then saves the result and writes the
report; the engine itself never writes results or reports.  Submodules are imported on use,
so `netdissect.engine.settings` stays cheap for the command line.
"""
__all__ = ["run_dissection", "Settings"]


def __getattr__(name: str):
    if name == "run_dissection":
        from netdissect.engine.run import run_dissection

        return run_dissection
    if name == "Settings":
        from netdissect.engine.settings import Settings

        return Settings
    raise AttributeError(name)
