"""The Hydra config groups (a package: Hydra finds them as pkg://amq.conf from amq.cli)."""
