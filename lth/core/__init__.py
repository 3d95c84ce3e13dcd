"""The method as pure math: Steps, masks and how they are pruned, the controls, the named random streams, errors.

May import torch and the standard library only: no Lightning, no Hydra, no file I/O. Everything else builds on it.
"""
