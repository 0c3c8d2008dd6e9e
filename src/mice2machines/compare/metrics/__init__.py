"""The built-in metrics, one module each; every module here is registered at import of
`mice2machines.compare.registry`, ordered by its ``ORDER``."""
