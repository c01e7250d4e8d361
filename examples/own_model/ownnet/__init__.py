"""A researcher's own package, as silo-oracle sees one: a model factory and a dataset factory.

Nothing here imports silo-oracle. The study file (../study.yaml) names the two factories by
import path and lists this folder in `code:`, which puts it on the driver's path and ships it
to every Ray worker.
"""
