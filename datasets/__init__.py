"""
Dataset preparation scripts, run from the repository root as ``python -m datasets.<script>``
(see README.md in this folder). This folder is also the default dataset root.
"""
