"""The model sources of the zoo table, one module each (``<prefix>.py`` for rows with builder
``<prefix>:<arch>``); every module here calls `zoo.register_builder` and is imported when
`mice2machines.models.zoo` is. Modules import torch inside their functions only, so reading
the table stays torch-free."""
