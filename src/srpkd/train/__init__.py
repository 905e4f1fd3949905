"""The training loop shared by ``srpkd train`` and ``srpkd distill``, its checkpoint state and helpers."""
