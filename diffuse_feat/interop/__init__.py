"""Models from other ecosystems as sigma-space denoisers, and our runs in their formats (``interop.diffusers``:
needs the optional ``diffusers`` extra, imported only when that submodule is)."""
